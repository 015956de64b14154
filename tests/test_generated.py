"""A public set the large model writes itself (public.source = "generated")."""
from __future__ import annotations

import json

import pytest

from engine.config import deep_merge, validate
from engine.data import generated
from engine.errors import PostError
from engine.presets import preset_data
from tests.helpers import FAST, LABEL_WORDS, run_with_sets, tiny_pair


def test_prefixes_and_counts():
    assert generated.prefixes("An article about {label}:\n", [["sport", "football"], ["tech"]]) == \
        ["An article about sport:\n", "An article about tech:\n"]
    assert generated.prefixes("A text:", LABEL_WORDS) == ["A text:", "A text:"]
    assert generated.counts(10, 3) == [4, 3, 3]
    assert sum(generated.counts(128, 5)) == 128


@pytest.mark.parametrize("prefix, says", [("", "is empty"), ("  ", "is empty"), ("About {topic}:", "{topic}"),
                                          ("About {label:", "stray"), ("About {}:", "{}")])
def test_bad_prefix_is_refused_where_it_enters(prefix, says):
    data = deep_merge(preset_data("smoke"), {"public": {"source": "generated", "prefix": prefix}})
    with pytest.raises(PostError) as err:
        validate(data)
    assert "public.prefix" in str(err.value) and says in str(err.value)


def test_generated_set_has_one_text_field():
    data = deep_merge(preset_data("smoke"), {"public": {"source": "generated", "prefix": "A {label} review:",
                                                        "text_fields": ["title", "body"], "template": "{title} {body}"}})
    with pytest.raises(PostError) as err:
        validate(data)
    assert "one text field" in str(err.value)


def test_distillation_needs_its_own_corpus_beside_a_generated_public_set():
    data = deep_merge(preset_data("smoke"), {"public": {"source": "generated", "prefix": "A {label} review:"},
                                             "distill": {"corpus": ""}})
    with pytest.raises(PostError) as err:
        validate(data)
    assert "set distill.corpus" in str(err.value)


def test_prefix_without_generated_source_is_refused():
    data = deep_merge(preset_data("smoke"), {"public": {"prefix": "About {label}:"}})
    with pytest.raises(PostError) as err:
        validate(data)
    assert "remove public.prefix" in str(err.value)


def test_sampling_is_seeded_per_class_and_leaves_the_run_rng_alone():
    import torch
    model, tok = tiny_pair("llama")
    model.eval()
    before = torch.random.get_rng_state()
    a = generated.sample(model, tok, ["bad It was", "great It was"], [3, 2], 6, seed=1, bos=None)
    # the run's own random stream is untouched: the generator state's bytes in this one process, not a float result
    assert torch.equal(torch.random.get_rng_state(), before)
    b = generated.sample(model, tok, ["bad It was", "great It was"], [3, 2], 6, seed=1, bos=None)
    c = generated.sample(model, tok, ["bad It was", "great It was"], [3, 2], 6, seed=2, bos=None)
    assert len(a) == 5 and all(t.strip() for t in a)
    assert a == b  # same seed, same process: the same texts
    assert a != c


def test_a_run_on_a_generated_public_set(tmp_path, monkeypatch):
    """The transfer trains on texts the large model wrote; they are kept with the run and in the cache,
    and a second run reads the cache instead of sampling again."""
    sets = FAST + ['public.source="generated"', 'public.prefix="A review that is {label}:"', "public.size=6"]
    result = run_with_sets(tmp_path / "a", sets)
    assert result.exit_code == 0, result.output
    kept = json.loads((tmp_path / "a" / "transfer" / "public_generated.json").read_text())
    assert len(kept["texts"]) == 6 and kept["prefix"] == "A review that is {label}:"
    assert json.loads((tmp_path / "a" / "results.json").read_text())["accuracy"]["post"] is not None

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled again although the cache holds these texts")
    monkeypatch.setattr(generated, "sample", no_sampling)
    result = run_with_sets(tmp_path / "b", sets)
    assert result.exit_code == 0, result.output
    again = json.loads((tmp_path / "b" / "transfer" / "public_generated.json").read_text())
    assert again["texts"] == kept["texts"]


def test_bad_prefix_from_the_cli_is_one_line(tmp_path):
    result = run_with_sets(tmp_path / "run", ['public.source="generated"'])
    assert result.exit_code == 2
    assert "public.prefix" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


class _Ctx:
    """What texts_for reads of a run: its config, its folder, its log."""
    def __init__(self, config, run_dir):
        self.config, self.run_dir = config, run_dir

    def stage_dir(self, stage):
        path = self.run_dir / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log(self, message, level="info"):
        pass


def test_a_resumed_run_keeps_its_own_texts_when_the_cache_is_gone(tmp_path, monkeypatch):
    """Prompts finished before an interruption were trained on the run's texts: a resume on another
    machine (no cache, sampling that may differ in the last digits) must not train the rest on others."""
    import os
    from pathlib import Path
    config = validate(deep_merge(preset_data("smoke"), {"public": {"source": "generated", "prefix": "A {label} one:",
                                                                   "size": 4, "max_length": 6}}))
    model, tok = tiny_pair("llama")
    model.eval()
    first = generated.texts_for(_Ctx(config, tmp_path / "a"), model, tok, None, 4)
    for cached in (Path(os.environ["POST_CACHE"]) / "public").glob("*.json"):
        cached.unlink()

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled again")
    monkeypatch.setattr(generated, "sample", no_sampling)
    assert generated.texts_for(_Ctx(config, tmp_path / "a"), model, tok, None, 4) == first
    with pytest.raises(AssertionError, match="sampled again"):  # a new run without a cache samples
        generated.texts_for(_Ctx(config, tmp_path / "b"), model, tok, None, 4)

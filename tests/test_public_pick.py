"""A public set balanced over the student's prompted classes (public.pick = "balanced")."""
from __future__ import annotations

import json

import pytest

from engine.config import deep_merge, validate
from engine.errors import PostError
from engine.presets import preset_data
from engine.public_pick import balanced_indices
from tests.helpers import FAST, run_with_sets


def test_balanced_indices_take_the_classes_in_turn_and_fill_up_from_the_rest():
    classes = [0] * 50 + [1] * 3 + [2] * 20
    chosen = balanced_indices(classes, 3, 21, seed=0)
    assert len(chosen) == len(set(chosen)) == 21
    kept = [classes[i] for i in chosen]
    assert kept.count(1) == 3 and kept.count(0) == kept.count(2) == 9  # the scarce class whole, the rest even
    assert chosen == balanced_indices(classes, 3, 21, seed=0)  # seeded
    assert chosen != balanced_indices(classes, 3, 21, seed=1)
    assert sorted(balanced_indices([1, 1, 0], 2, 10, seed=0)) == [0, 1, 2]  # a small pool: all of it


def test_a_balanced_pick_needs_a_source_to_pick_from_and_a_pool_above_the_size():
    base = preset_data("smoke")
    with pytest.raises(PostError, match="already written in equal shares per class: remove public.pick"):
        validate(deep_merge(base, {"public": {"source": "generated", "prefix": "A {label} review:", "pick": "balanced"}}))
    with pytest.raises(PostError, match="public.pool = 10 is not above public.size = 64"):
        validate(deep_merge(base, {"public": {"pick": "balanced", "pool": 10}}))
    with pytest.raises(PostError, match="public.pool = 64 is not above public.size = 64"):
        validate(deep_merge(base, {"public": {"pick": "balanced", "pool": 64}}))
    with pytest.raises(PostError, match="public.pool is read only with public.pick"):
        validate(deep_merge(base, {"public": {"pool": 500}}))
    with pytest.raises(PostError, match="public.pick"):
        validate(deep_merge(base, {"public": {"pick": "even"}}))
    assert validate(deep_merge(base, {"public": {"pick": "balanced", "pool": 0}})).public.pool == 0


def test_a_run_on_a_balanced_public_set_says_what_it_kept(tmp_path, monkeypatch):
    sets = FAST + ['public.pick="balanced"', "public.pool=0", "public.size=16"]
    result = run_with_sets(tmp_path / "run", sets)
    assert result.exit_code == 0, result.output
    events = (tmp_path / "run" / "events.jsonl").read_text()
    said = [json.loads(line)["message"] for line in events.splitlines() if "balanced over the student" in line]
    assert len(said) == 1 and said[0].startswith("public: 16 of ")
    pool = json.loads(said[0].split("(shares ")[1].split(" in the pool")[0])
    kept = json.loads(said[0].split("in the pool, ")[1].split(" kept")[0])
    assert min(pool) > 0.2 and kept == [0.5, 0.5], said[0]  # the pool has more than 8 texts of each class
    finished = [json.loads(line) for line in events.splitlines() if '"StageFinished"' in line and '"transfer:' in line]
    assert finished and all(e["summary"]["public_examples"] == 16 for e in finished)  # trained on the pick
    record = json.loads((tmp_path / "run" / "transfer" / "public_pick.json").read_text())
    assert len(record["chosen"]) == 16 and len(record["classes"]) == record["candidates"] > 16
    assert sorted(record["classes"][i] for i in record["chosen"]) == [0] * 8 + [1] * 8

    # a resumed transfer reads the kept pick instead of picking again
    from engine import public_pick
    def no_picking(*args, **kwargs):
        raise AssertionError("picked again although the run keeps its pick")
    monkeypatch.setattr(public_pick, "_pick", no_picking)
    (tmp_path / "run" / "transfer" / "done.json").unlink()
    from typer.testing import CliRunner
    from post_tui.cli import app
    result = CliRunner().invoke(app, ["run", "--resume", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "transfer" in result.output and json.loads((tmp_path / "run" / "transfer" / "public_pick.json").read_text()) == record


def test_a_random_pick_keeps_the_fingerprint_of_runs_made_before_public_pick():
    from engine.fingerprints import public_settings
    data = preset_data("smoke")
    before = {"source": "smoke", "subset": "", "text_fields": ["text"], "template": "{text} It was", "split": "corpus",
              "size": 64, "max_length": 32}  # the public part of a smoke run's transfer fingerprint before public.pick
    assert public_settings(validate(data)) == before
    balanced = public_settings(validate(deep_merge(data, {"public": {"pick": "balanced", "pool": 200}})))
    assert balanced == {**before, "pick": "balanced", "pool": 200}

"""A public set balanced over the student's prompted classes (public.pick = "balanced")."""
from __future__ import annotations

import json
from pathlib import Path

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


def test_a_balanced_pick_needs_a_pool_above_the_size_and_a_count_for_a_generated_one():
    base = preset_data("smoke")
    generated = {"source": "generated", "prefix": "A {label} review:", "pick": "balanced"}
    with pytest.raises(PostError, match="a generated public set has none: give public.pool"):
        validate(deep_merge(base, {"public": {**generated, "pool": 0}}))
    assert validate(deep_merge(base, {"public": {**generated, "pool": 200}})).public.pool == 200
    with pytest.raises(PostError, match=r"raise public.pool$"):  # no "0: the whole split" where 0 is refused
        validate(deep_merge(base, {"public": {**generated, "pool": 64}}))
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

    # the same settings over other texts (a source file edited in place, as many rows): the kept indices
    # would pick other texts than the prompts were trained on, so the pick is made again
    from engine import loading
    real_load = loading.load_public
    monkeypatch.setattr(loading, "load_public", lambda *a, **k: real_load(*a, **k).subset(
        list(range(len(real_load(*a, **k).input_ids)))[::-1]))
    (tmp_path / "run" / "transfer" / "done.json").unlink()
    result = CliRunner().invoke(app, ["run", "--resume", str(tmp_path / "run")])
    assert "picked again" in result.output, result.output

    # back to a random public set: the transfer runs again, and the pick is neither listed in its record
    # (the record says what the prompts were trained on) nor left in the folder to be taken for it
    monkeypatch.setattr(loading, "load_public", real_load)
    result = CliRunner().invoke(app, ["run", "--resume", str(tmp_path / "run"), "--set", 'public.pick="random"',
                                      "--set", "public.pool=1024"])
    assert result.exit_code == 0, result.output
    stage = json.loads((tmp_path / "run" / "transfer" / "done.json").read_text())
    assert stage["status"] == "completed" and "public_pick.json" not in str(stage["artifacts"])
    assert not (tmp_path / "run" / "transfer" / "public_pick.json").exists()


def test_a_generated_public_set_is_picked_from_the_pool_the_large_model_wrote(tmp_path):
    """Texts the large model writes after a class's prefix are not always of that class to the student (it
    called 74 % of the spam row's written mails spam at seed 4, BENCHMARKS.md): with a balanced pick it writes
    the pool, equally many after each prefix, and the student's prompted classes pick the public set."""
    sets = FAST + ['public.source="generated"', 'public.prefix="A review that is {label}:"', 'public.pick="balanced"',
                   "public.pool=12", "public.size=6"]
    result = run_with_sets(tmp_path / "run", sets)
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "run" / "transfer" / "public_generated.json").read_text())["texts"]
    record = json.loads((tmp_path / "run" / "transfer" / "public_pick.json").read_text())
    assert len(written) == record["candidates"] == len(record["classes"]) == 12 and len(record["chosen"]) == 6
    picked = [record["classes"][i] for i in record["chosen"]]
    assert sorted(picked) == sorted(balanced_indices_classes(record["classes"], 6))  # the rule, on the pool's classes
    events = (tmp_path / "run" / "events.jsonl").read_text()
    assert "the large model writes 12 texts" in events and "public: 6 of 12 texts, balanced" in events
    finished = [json.loads(line) for line in events.splitlines() if '"StageFinished"' in line and '"transfer:' in line]
    assert finished and all(e["summary"]["public_examples"] == 6 for e in finished)  # trained on the pick
    stage = json.loads((tmp_path / "run" / "transfer" / "done.json").read_text())
    assert {"public_generated.json", "public_pick.json"} <= {Path(a["path"]).name for a in stage["artifacts"].values()}


def balanced_indices_classes(classes: list[int], size: int) -> list[int]:
    return [classes[i] for i in balanced_indices(classes, 2, size, seed=0)]


def test_a_random_pick_keeps_the_fingerprint_of_runs_made_before_public_pick():
    from engine.fingerprints import public_settings
    data = preset_data("smoke")
    before = {"source": "smoke", "subset": "", "text_fields": ["text"], "template": "{text} It was", "split": "corpus",
              "size": 64, "max_length": 32}  # the public part of a smoke run's transfer fingerprint before public.pick
    assert public_settings(validate(data)) == before
    balanced = public_settings(validate(deep_merge(data, {"public": {"pick": "balanced", "pool": 200}})))
    assert balanced == {**before, "pick": "balanced", "pool": 200}

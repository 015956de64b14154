"""Distillation with the hidden-state loss: teacher states cached once, exact, and reused."""
import json

import pytest
import torch
from typer.testing import CliRunner

from engine import loading
from engine.assets import cache_root
from engine.context import RunContext
from engine.distill import corpus_key, final_hidden, teacher_hidden_states, teacher_identity
from engine.presets import load_config
from engine.tiny import build_tokenizer
from post_tui.cli import app

runner = CliRunner()


def distill(tmp_path, name, *sets):
    run_dir = tmp_path / name
    args = ["distill", "--preset", "smoke", "--out", str(run_dir), "--set", 'distill.loss="hidden"',
            "--set", "distill.steps=40"]
    for s in sets:
        args += ["--set", s]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return json.loads((run_dir / "distill" / "summary.json").read_text()), events


@pytest.mark.parametrize("large", ["tiny:gpt2", "tiny:llama"])
def test_hidden_loss_falls_and_never_runs_the_lm_head(tmp_path, monkeypatch, large):
    calls = []
    real = torch.nn.Linear.forward

    vocab = len(build_tokenizer())

    def counted(self, x):  # every LM head call (the only Linear onto the vocabulary)
        if self.out_features == vocab:
            calls.append(x.shape)
        return real(self, x)
    monkeypatch.setattr(torch.nn.Linear, "forward", counted)
    summary, events = distill(tmp_path, "run", f'models.large="{large}"')
    mse = [e["value"] for e in events if e["event"] == "Metric" and e["name"] == "mse"]
    assert len(mse) == 40 and sum(mse[-8:]) < sum(mse[:8])
    assert summary["loss"] == "hidden" and "teacher_cache_seconds" in summary  # 40 × 8 rows > the corpus
    assert calls == []
    distill(tmp_path, "kd", f'models.large="{large}"', 'distill.loss="kd"', "distill.steps=1")
    assert calls  # the hook does see the head when a loss uses it


def test_hidden_loss_without_cache_when_the_corpus_is_read_once(tmp_path):
    summary, events = distill(tmp_path, "run", "distill.steps=3", "distill.batch_size=2")
    assert "teacher_cache_seconds" not in summary and summary["steps"] == 3
    assert not (cache_root() / "teacher_hidden").exists() or not any((cache_root() / "teacher_hidden").iterdir())


def test_cached_states_are_the_teachers_and_are_reused(tmp_path):
    cfg = load_config("smoke", overrides=['distill.loss="hidden"'])
    ctx = RunContext(cfg, tmp_path / "ctx")
    teacher, tokenizer = loading.large(ctx)
    rows = torch.randint(5, len(tokenizer), (5, 12), generator=torch.Generator().manual_seed(0))
    key = corpus_key(teacher_identity(cfg, teacher, tokenizer), rows)
    cached = teacher_hidden_states(ctx, teacher, rows, key)
    with torch.no_grad():
        direct = final_hidden(teacher, rows)
    assert cached.dtype == torch.bfloat16 and cached.shape == direct.shape
    torch.testing.assert_close(cached.float(), direct, rtol=1e-2, atol=1e-2)  # bf16 storage
    (path,) = (cache_root() / "teacher_hidden").glob("*.safetensors")
    stamp = path.stat().st_mtime_ns
    assert torch.equal(teacher_hidden_states(ctx, teacher, rows, key), cached)
    assert path.stat().st_mtime_ns == stamp  # read back, not recomputed
    path.write_bytes(b"damaged")  # a damaged cache is recomputed, never trusted
    assert torch.equal(teacher_hidden_states(ctx, teacher, rows, key), cached)


def test_cancelled_caching_writes_nothing(tmp_path):
    cfg = load_config("smoke", overrides=['distill.loss="hidden"'])
    ctx = RunContext(cfg, tmp_path / "ctx")
    teacher, tokenizer = loading.large(ctx)
    rows = torch.randint(5, len(tokenizer), (70, 8), generator=torch.Generator().manual_seed(0))
    ctx.cancel_event.set()
    assert teacher_hidden_states(ctx, teacher, rows, "k") is None
    assert list((cache_root() / "teacher_hidden").iterdir()) == []


def test_what_the_student_key_holds(tmp_path):
    first, _ = distill(tmp_path, "a")
    again, _ = distill(tmp_path, "b", "distill.weight_kd=1.0")  # a kd-only setting: same student
    templated, _ = distill(tmp_path, "c", 'distill.template="{text} It was"')
    kd, _ = distill(tmp_path, "d", 'distill.loss="kd"')
    assert again["key"] == first["key"] and again["reused"]
    assert templated["key"] != first["key"] and not templated["reused"]
    assert kd["key"] not in (first["key"], templated["key"]) and kd["loss"] == "kd"
    absolute, _ = distill(tmp_path, "e", "distill.blocks=[0, 3]")  # smoke's [0, -1] of tiny's 4 blocks
    assert absolute["key"] == first["key"] and absolute["reused"] and absolute["blocks"] == [0, 3]
    cued, _ = distill(tmp_path, "f", 'distill.template="{text} It was"', "distill.cue_weight=4.0")
    assert cued["key"] != templated["key"] and cued["cue_positions"] > 0


def test_template_without_text_is_a_one_line_error(tmp_path):
    result = runner.invoke(app, ["run", "--preset", "smoke", "--out", str(tmp_path / "r"),
                                 "--set", 'distill.template="It was"'])
    assert result.exit_code == 2 and "{text}" in result.output and "Traceback" not in result.output


def test_distillation_rows_begin_like_tuning_inputs():
    # a tokenizer that starts sequences with BOS: every packed row starts with it, as prompted inputs do
    from engine.distill import pack
    from engine.prompt import bos_id
    from tests.helpers import sentencepiece_style_tokenizer
    texts = ["the movie was great It was", "this film felt dull It was"] * 20
    sp = sentencepiece_style_tokenizer()
    rows = pack(sp, texts, 8)
    assert bos_id(sp) is not None and (rows[:, 0] == bos_id(sp)).all() and rows.shape[1] == 8
    assert (rows[:, 1:] != bos_id(sp)).all()
    stream = [t for ids in sp(texts, add_special_tokens=False).input_ids for t in ids + [sp.eos_token_id]]
    assert rows[:, 1:].flatten().tolist() == stream[:rows.shape[0] * 7]  # the text, in order, nothing lost between rows
    gpt2 = build_tokenizer()  # no BOS on its inputs: rows are the plain stream
    plain = pack(gpt2, texts, 8)
    assert bos_id(gpt2) is None
    stream = [t for ids in gpt2(texts, add_special_tokens=False).input_ids for t in ids + [gpt2.eos_token_id]]
    assert plain.flatten().tolist() == stream[:plain.numel()]


def test_a_student_cached_before_kits_is_wrapped_not_distilled_again(tmp_path):
    import shutil
    from engine import kit
    summary, _ = distill(tmp_path, "first", "distill.steps=3")
    folder = cache_root() / "students" / summary["key"]
    before = kit.fingerprint_of(folder)
    for path in (folder / "student").iterdir():  # the layout of an earlier post: files at the top, no manifest
        shutil.move(str(path), folder / path.name)
    (folder / "student").rmdir()
    (folder / "manifest.json").unlink()
    again, events = distill(tmp_path, "second", "distill.steps=3")
    assert again["reused"] is True
    assert any("wrapped into a kit" in e.get("message", "") for e in events if e["event"] == "Log")
    assert kit.fingerprint_of(folder) == before  # the same files: the same kit


def test_a_run_recorded_before_kits_survives_another_run_wrapping_its_student(tmp_path):
    """A run folder from an earlier post names the student folder itself; a later run may wrap that
    folder into a kit in place. The old run must still load its student, with the same identity (or
    every finished stage after distill would run again)."""
    import shutil
    from engine import fingerprints, kit, loading
    summary, _ = distill(tmp_path, "old", "distill.steps=3")
    folder = cache_root() / "students" / summary["key"]
    for path in (folder / "student").iterdir():  # the earlier layout, and the earlier record
        shutil.move(str(path), folder / path.name)
    (folder / "student").rmdir()
    (folder / "manifest.json").unlink()
    (tmp_path / "old" / "distill" / "student.json").write_text(json.dumps({"path": str(folder), "key": summary["key"]}))
    from engine import artifacts, records
    stage = tmp_path / "old" / "distill"
    record = records.read(stage)
    record["artifacts"]["student"]["sha256"] = artifacts.sha256_of(folder)  # what an earlier post recorded
    record["artifacts"]["record"]["sha256"] = artifacts.sha256_of(stage / "student.json")
    artifacts.write_json(records.path_of(stage), record)
    assert records.why_not_done(stage, record["inputs"]) is None
    ctx = RunContext(load_config("smoke", overrides=['distill.loss="hidden"', "distill.steps=3"]), tmp_path / "old")
    before = fingerprints.student_identity(ctx)
    assert loading.student_ref(ctx) == str(folder)
    distill(tmp_path, "new", "distill.steps=3")  # wraps the folder into a kit
    assert kit.is_kit(folder)
    ctx = RunContext(load_config("smoke", overrides=['distill.loss="hidden"', "distill.steps=3"]), tmp_path / "old")
    assert loading.student_ref(ctx) == str(folder / "student")
    assert fingerprints.student_identity(ctx) == before
    assert records.why_not_done(stage, record["inputs"]) is None  # its distill stage still counts as done


def test_a_corpus_file_edited_in_place_makes_a_new_student(tmp_path):
    def on(path):
        return f'distill.corpus="{path}"', 'distill.corpus_split="train"', "distill.steps=2"
    corpus = tmp_path / "corpus.csv"
    corpus.write_text("text\n" + "\n".join(f"a plain sentence number {i} about the weather" for i in range(40)))
    first, _ = distill(tmp_path, "first", *on(corpus))
    same, _ = distill(tmp_path, "same", *on(corpus))
    corpus.write_text(corpus.read_text().replace("weather", "harbour"))
    edited, _ = distill(tmp_path, "edited", *on(corpus))
    assert same["key"] == first["key"] and same["reused"] is True
    assert edited["key"] != first["key"] and edited["reused"] is False


def test_long_teacher_caching_says_how_far_it_is(tmp_path, monkeypatch):
    import itertools
    import engine.distill as distill_module
    cfg = load_config("smoke", overrides=['distill.loss="hidden"'])
    ctx = RunContext(cfg, tmp_path / "ctx")
    said = []
    monkeypatch.setattr(ctx, "log", lambda message, level="info": said.append(message))
    clock = itertools.count(0, 31)  # every reading 31 s later: as slow as a large model on a CPU
    monkeypatch.setattr(distill_module.time, "perf_counter", lambda: float(next(clock)))
    teacher, tokenizer = loading.large(ctx)
    rows = torch.randint(5, len(tokenizer), (70, 12), generator=torch.Generator().manual_seed(0))
    teacher_hidden_states(ctx, teacher, rows, corpus_key(teacher_identity(cfg, teacher, tokenizer), rows))
    progress = [m for m in said if m.startswith("teacher hidden states:")]
    assert progress[0].startswith("teacher hidden states: 32 of 70 rows") and "70 of 70 rows" in progress[-1]


def test_merge_groups_split_each_run_of_dropped_blocks_between_its_neighbours():
    from engine.models import merge_groups
    # SmolLM2's demo blocks [0, 1, 28, 29] of 30: 2..14 to block 1, 15..27 to block 28
    owner = merge_groups([0, 1, 28, 29], 30)
    assert [b for b in range(30) if owner[b] == 1] == list(range(1, 15))
    assert [b for b in range(30) if owner[b] == 2] == list(range(15, 29))
    assert owner[0] == 0 and owner[29] == 3
    # blocks before the first kept one and after the last go to them; a tie goes to the earlier block
    assert merge_groups([2, 4], 7) == {0: 0, 1: 0, 2: 0, 3: 0, 4: 1, 5: 1, 6: 1}


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_merged_student_block_is_the_mean_of_its_group(family):
    from engine.models import block_list, make_student
    from tests.helpers import tiny_pair
    teacher = tiny_pair(family, layers=4)[0]
    kept, merged = make_student(teacher, [0, -1]), make_student(teacher, [0, -1], "merged")
    _, blocks = block_list(teacher)
    _, kept_blocks = block_list(kept)
    _, merged_blocks = block_list(merged)
    for name, weight in merged_blocks[0].state_dict().items():  # student block 0 = mean of teacher blocks 0, 1
        want = (blocks[0].state_dict()[name].float() + blocks[1].state_dict()[name].float()) / 2
        torch.testing.assert_close(weight, want, rtol=0, atol=1e-7)
        assert torch.equal(kept_blocks[0].state_dict()[name], blocks[0].state_dict()[name])  # copied bytes: exact
    if family == "llama":  # llama's tiny blocks differ from one another: the merge really changed the weights
        moved = merged_blocks[1].state_dict()["mlp.up_proj.weight"] - blocks[3].state_dict()["mlp.up_proj.weight"]
        assert moved.abs().max() > 1e-3  # random blocks differ by far more than any float rounding of a mean
    assert merged.config.post_student_init == "merged"


def test_a_merged_start_is_another_student_and_refused_beside_models_small(tmp_path):
    first, _ = distill(tmp_path, "a")
    merged, events = distill(tmp_path, "m", 'distill.init="merged"')
    assert merged["key"] != first["key"] and not merged["reused"]
    assert any("mean of its group" in e.get("description", "") for e in events)
    kept, _ = distill(tmp_path, "k", 'distill.init="kept"')  # the default, said aloud: the same student
    assert kept["key"] == first["key"] and kept["reused"]
    result = runner.invoke(app, ["run", "--preset", "smoke", "--out", str(tmp_path / "s"), "--set", 'distill.init="merged"',
                                 "--set", 'models.small="tiny:gpt2"'])
    assert result.exit_code == 2 and "distill.init" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("family", ["tiny:gpt2", "tiny:llama"])
def test_the_bridge_matches_what_entered_each_kept_block(tmp_path, family):
    from engine import distill_shards
    from engine.distill import bridge_blocks, teacher_states
    from engine.losses import bridge_state_loss
    from engine.models import make_student
    cfg = load_config("smoke", overrides=['distill.loss="hidden"', f'models.large="{family}"'])
    teacher, tokenizer = loading.large(RunContext(cfg, tmp_path / "ctx"))
    rows = torch.randint(5, len(tokenizer), (3, 10), generator=torch.Generator().manual_seed(0))
    # a student of every block sees, at each block, what the teacher's block saw; one that jumps 1 → 3 does not
    for keep, same in (([0, 1, 2, 3], True), ([0, 3], False), ([0, 2, 3], False)):
        student = make_student(teacher, keep).eval()
        with torch.no_grad():
            mine = distill_shards.StudentForward(student, hidden_only=True, bridge=True)(rows)
            theirs = teacher_states(teacher, rows, bridge=bridge_blocks(keep))
        assert mine.shape == theirs.shape == (3, len(keep), 10, teacher.config.hidden_size)
        torch.testing.assert_close(mine[:, 0], final_hidden(student, rows))  # the final states come first
        assert (bridge_state_loss(mine[:, 1:], theirs[:, 1:]).item() < 1e-5) == same, keep


def test_the_bridge_loss_is_scale_free_per_position():
    from engine.losses import bridge_state_loss
    t = torch.randn(2, 3, 5, 8)
    t[:, :, 0] *= 100  # a BOS-like position with a massive norm
    s = t * 1.1  # 10 % too long everywhere: rel. squared error 0.01, cosine 1
    torch.testing.assert_close(bridge_state_loss(s, t), torch.tensor(0.01))
    weights = torch.zeros(2, 5)
    weights[:, 1] = 1
    s[:, :, 1] = -t[:, :, 1]  # only the weighted position is reversed: rel. error 4, 1 − cos = 2
    torch.testing.assert_close(bridge_state_loss(s, t, weights), torch.tensor(6.0))


def test_the_bridge_is_another_student_and_trains_the_states_between_blocks(tmp_path):
    first, _ = distill(tmp_path, "a")
    unset, _ = distill(tmp_path, "z", "distill.bridge_weight=0.0")  # off, said aloud: the same student
    bridged, events = distill(tmp_path, "b", "distill.bridge_weight=1.0")
    assert unset["key"] == first["key"] and unset["reused"]
    assert bridged["key"] != first["key"] and not bridged["reused"] and bridged["bridge_blocks"] == [3]
    assert "teacher_cache_seconds" in bridged  # the cached teacher states hold the bridge's too
    between = [e["value"] for e in events if e["event"] == "Metric" and e["name"] == "bridge"]
    assert len(between) == 40 and sum(between[-8:]) < sum(between[:8])
    once, events = distill(tmp_path, "o", "distill.bridge_weight=1.0", "distill.steps=3", "distill.batch_size=2")
    assert "teacher_cache_seconds" not in once and len([e for e in events if e.get("name") == "bridge"]) == 3


@pytest.mark.parametrize("sets, says", [
    (['distill.loss="kd"'], "distill.loss"),
    (['models.small="tiny:gpt2"'], "models.small"),
    (["distill.prefix_share=0.5"], "prefix_share"),
])
def test_the_bridge_refuses_what_it_cannot_match(tmp_path, sets, says):
    args = ["distill", "--preset", "smoke", "--out", str(tmp_path / "r"), "--set", 'distill.loss="hidden"',
            "--set", "distill.bridge_weight=1.0"] + [a for s in sets for a in ("--set", s)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and says in result.output and "bridge_weight" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_the_student_a_run_goes_on_with_is_the_one_a_later_stage_loads(tmp_path, monkeypatch):
    # runtime.dtype = "auto" on a bf16 machine keeps frozen weights in bf16: the student that `post run`
    # tunes right after distilling must be the one `post tune` alone (or a resume) loads, to the bit
    from engine import context, distill as distill_stage
    monkeypatch.setattr(context, "pick_dtype", lambda *_: ("bfloat16", "a bf16 machine (test)"))
    cfg = load_config("smoke", overrides=['distill.loss="hidden"', "distill.steps=3", 'runtime.dtype="auto"'])
    ctx = RunContext(cfg, tmp_path / "run")
    distill_stage.run_distill(ctx)
    in_memory, loaded = ctx.cache["small"][0], loading.small(RunContext(cfg, tmp_path / "run"))[0]
    assert in_memory.dtype == loaded.dtype == torch.bfloat16 and not in_memory.training
    theirs = loaded.state_dict()
    # exact on purpose: one process, one student — the reload reads back the very float32 bytes the kit was
    # written from, and both sides take the same deterministic cast to bf16; no training or machine between them
    assert all(torch.equal(value, theirs[name]) for name, value in in_memory.state_dict().items())


def _corpus_folder(folder, texts):
    folder.mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return str(folder)


def test_a_corpus_mix_reads_each_source_its_share(tmp_path):
    from engine.distill import corpus_texts, student_key
    a = _corpus_folder(tmp_path / "a", [f"alpha text {i}" for i in range(6)])
    b = _corpus_folder(tmp_path / "b", [f"beta text {i}" for i in range(9)])
    mixed = load_config("smoke", overrides=[f'distill.corpus=["{a}", "{b}"]'])
    texts = corpus_texts(mixed)
    assert sorted(texts) == sorted([f"alpha text {i}" for i in range(6)] + [f"beta text {i}" for i in range(9)])
    capped = load_config("smoke", overrides=[f'distill.corpus=["{a}", "{b}"]', "distill.max_texts=8"])
    texts = corpus_texts(capped)  # 8 texts split evenly: 4 from each source
    assert sum(t.startswith("alpha") for t in texts) == 4 and sum(t.startswith("beta") for t in texts) == 4
    one = load_config("smoke", overrides=[f'distill.corpus=["{a}"]'])
    assert one.distill.corpus == a  # a list of one source is that source: the same student as the plain name
    plain = load_config("smoke", overrides=[f'distill.corpus="{a}"'])
    identity = {"teacher": "t"}
    assert student_key(one, identity, [0]) == student_key(plain, identity, [0])
    assert student_key(mixed, identity, [0]) != student_key(plain, identity, [0])
    before = student_key(mixed, identity, [0])
    (tmp_path / "b" / "corpus.jsonl").write_text(json.dumps({"text": "edited"}) + "\n")
    assert student_key(mixed, identity, [0]) != before  # a local source edited in place: another student


@pytest.mark.parametrize("corpus, says", [('[]', "each source"), ('["amazon", "amazon"]', "twice"),
                                          ('["amazon", "generated"]', "written by the transfer"),
                                          ('["amazon", ""]', "each source")])
def test_a_bad_corpus_list_is_a_one_line_error(tmp_path, corpus, says):
    result = runner.invoke(app, ["run", "--preset", "smoke", "--out", str(tmp_path / "r"), "--set", f"distill.corpus={corpus}"])
    assert result.exit_code == 2 and says in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "r").exists()


def test_a_mixed_corpus_distils_from_both_sources(tmp_path):
    a = _corpus_folder(tmp_path / "a", [f"the movie was great number {i}" for i in range(30)])
    summary, _ = distill(tmp_path, "m", f'distill.corpus=["smoke", "{a}"]')
    single, _ = distill(tmp_path, "s")
    assert summary["corpus_rows"] > single["corpus_rows"] and summary["key"] != single["key"]


def test_corpus_shares_and_bad_values(tmp_path):
    from engine.distill import corpus_texts
    from engine.errors import PostError
    folders = [_corpus_folder(tmp_path / n, [f"{n} text {i}" for i in range(5)]) for n in "abc"]
    listed = "[" + ", ".join(f'"{f}"' for f in folders) + "]"
    texts = corpus_texts(load_config("smoke", overrides=[f"distill.corpus={listed}", "distill.max_texts=7"]))
    assert len(texts) == 7 and [sum(t.startswith(n) for t in texts) for n in "abc"] == [3, 2, 2]
    with pytest.raises(PostError, match="at least 3"):
        corpus_texts(load_config("smoke", overrides=[f"distill.corpus={listed}", "distill.max_texts=2"]))
    for bad, says in (('"generated"', "cannot be the distillation corpus"), ("[1, 2]", "each source"),
                      ("3", "not a data source"), ('["smoke", " smoke"]', "twice")):
        result = runner.invoke(app, ["run", "--preset", "smoke", "--out", str(tmp_path / "r"), "--set", f"distill.corpus={bad}"])
        assert result.exit_code == 2 and says in result.output and "Traceback" not in result.output, (bad, result.output)


def test_the_student_key_holds_a_tied_heads_freeze_and_a_hub_corpus_rows(monkeypatch):
    """Two settings the hidden-state key had left out: on a model whose head is its input embedding (GPT-2,
    SmolLM2, Gemma), freezing the head freezes the embeddings that freeze_embeddings = false trains; and a
    corpus read from the hub, whose name does not fix its rows. Defaults keep the keys they had."""
    from engine import distill
    from engine.data import sources
    from engine.data.smoke import smoke_corpus
    from engine.presets import load_config

    def key(*sets):
        return distill.student_key(load_config("smoke", None, ['distill.loss="hidden"', *sets]), {"teacher": "t"})
    assert key("distill.freeze_head=true") == key("distill.freeze_head=false")  # frozen embeddings: no difference
    assert key("distill.freeze_embeddings=false", "distill.freeze_head=true") != \
        key("distill.freeze_embeddings=false", "distill.freeze_head=false")
    served = {"rows": [{"text": t} for t in smoke_corpus(0)[:50]]}
    monkeypatch.setattr(sources, "_hub", lambda name, subset, split: list(served["rows"]))
    monkeypatch.setattr(distill, "_CORPUS_ROWS", {})
    hub = 'distill.corpus="someone/corpus"'
    before = key(hub)
    assert key(hub) == before  # the same rows: the same student
    served["rows"] = [{"text": t + " indeed"} for t in smoke_corpus(0)[:50]]  # a new revision, the same name
    monkeypatch.setattr(distill, "_CORPUS_ROWS", {})  # a new process
    assert key(hub) != before

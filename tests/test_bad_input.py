"""The bad-input matrix: every way a user can hand post a broken config, data file, run folder or
certificate ends in one line on stderr, exit code 2, no traceback, and nothing left behind.

Each case is a `Case(id, make, needle)`: `make(tmp)` writes what the case needs under `tmp` and
returns the CLI arguments; `needle` must appear in the error line. Data errors are caught in
preflight (before any training), so a case takes a fraction of a second in process. Cases with
`subprocess=True` run `python -m post_tui.cli` for real, to prove no traceback reaches stderr.
To add a case, append to CASES (or to a category list below).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from engine.data.tasks import _labels
from engine.errors import PostError
from post_tui.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@dataclass
class Case:
    id: str
    make: Callable[[Path], list[str]]  # writes the case's files under tmp, returns the CLI arguments
    needle: str                        # expected in the one error line
    subprocess: bool = False           # run through a real `python -m post_tui.cli`


# ---------------------------------------------------------------- builders

def smoke_run(tmp: Path, *sets: str) -> list[str]:
    return ["run", "--preset", "smoke", *[a for s in sets for a in ("--set", s)], "--out", str(tmp / "run")]


def toml_str(value) -> str:
    return json.dumps(str(value))  # a JSON string is a TOML basic string


def user_config(text: str | bytes, *sets: str) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        path = tmp / "mine.toml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["run", "--config", str(path), *[a for s in sets for a in ("--set", s)], "--out", str(tmp / "run")]
    return make


def with_sets(*sets: str) -> Callable[[Path], list[str]]:
    return lambda tmp: smoke_run(tmp, *sets)


def rows_csv(n: int = 40, label=lambda i: i % 2, text=lambda i: f"the film number {i} was fine") -> str:
    return "text,label\n" + "".join(f"{text(i)},{label(i)}\n" for i in range(n))


def task_file(content: str | bytes, name: str = "data.csv", *sets: str) -> Callable[[Path], list[str]]:
    """The private task from a local file written in tmp."""
    def make(tmp: Path) -> list[str]:
        path = tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return smoke_run(tmp, f"task.source={toml_str(path)}", *sets)
    return make


def public_file(content: str, name: str = "public.csv", *sets: str) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        path = tmp / name
        path.write_text(content)
        return smoke_run(tmp, f"public.source={toml_str(path)}", "public.split=\"train\"", *sets)
    return make


def jsonl(n: int = 40, broken: dict[int, str] | None = None) -> str:
    lines = [json.dumps({"text": f"the film number {i} was fine", "label": i % 2}) for i in range(n)]
    for index, line in (broken or {}).items():
        lines[index] = line
    return "\n".join(lines) + "\n"


def run_folder(config: str | bytes | None, command: str = "tune") -> Callable[[Path], list[str]]:
    """A run folder holding only `config.toml` with this content (None: no config.toml)."""
    def make(tmp: Path) -> list[str]:
        folder = tmp / "old-run"
        folder.mkdir()
        if config is not None:
            (folder / "config.toml").write_bytes(config if isinstance(config, bytes) else config.encode())
        return [command, str(folder)]
    return make


def certificate() -> dict:
    """A valid certificate (ε recomputed with Opacus' RDP accountant for its history)."""
    from engine.privacy import accounting
    history = [[1.1, 0.05, 40]]
    delta = 1e-4
    return {"accountant": "rdp", "delta": delta, "epsilon": accounting.reference_epsilon(history, delta, "rdp"),
            "target_epsilon": 8.0, "clip": 1.0, "n_examples": 320, "sample_rate": 0.05, "noise_multiplier": 1.1,
            "sampling": "poisson", "steps": 40, "history": history, "versions": {"opacus": "test"}}


def tampered(change: Callable[[dict], object] = lambda cert: None, raw: bytes | None = None,
             as_run: bool = True) -> Callable[[Path], list[str]]:
    """`post privacy verify` on a run folder whose tune/privacy.json was changed."""
    def make(tmp: Path) -> list[str]:
        folder = tmp / "dp-run" / "tune"
        folder.mkdir(parents=True)
        if raw is not None:
            text = raw
        else:
            cert = certificate()
            change(cert)  # changes it in place
            text = json.dumps(cert).encode()
        (folder / "privacy.json").write_bytes(text)
        return ["privacy", "verify", str(folder.parent if as_run else folder / "privacy.json")]
    return make


def drop(key: str) -> Callable[[dict], None]:
    return lambda cert: cert.pop(key)


def setting(key: str, value) -> Callable[[dict], None]:
    return lambda cert: cert.__setitem__(key, value)


# ---------------------------------------------------------------- the matrix

CONFIG = [
    Case("config-unknown-key", user_config('extends = "smoke"\n[tune]\nlr_rate = 0.1\n'), "did you mean tune.lr?"),
    Case("config-unknown-key-set", with_sets("tranfer.alpha=0.3"), "unknown key tranfer; did you mean transfer?"),
    Case("config-unknown-section", user_config('extends = "smoke"\n[tuning]\nlr = 0.1\n'), "unknown key tuning"),
    Case("config-extends-in-a-section", user_config('[tune]\nlr = 0.1\nextends = "smoke"\n'), "goes at the top"),
    Case("config-of-another-project", user_config('[tool.black]\nline-length = 88\n'), "not a post config"),
    Case("config-section-is-a-value", user_config('extends = "smoke"\ntune = 3\n'), "must be a table"),
    Case("config-wrong-type", with_sets('tune.lr="fast"'), "tune.lr"),
    Case("config-unknown-device", with_sets('runtime.device="tpu"'), "'tpu' is not a device post runs on"),
    # a GPU this machine lacks (none here; one on a GPU box): refused before the run folder or its lock is made
    Case("config-missing-gpu", with_sets('runtime.device="cuda:99"'), "runtime.device=cuda:99"),
    Case("config-one-class", with_sets('task.label_words=[["good"]]'), "a classifier needs at least two"),
    Case("config-wrong-type-list", with_sets("distill.blocks=3"), "distill.blocks"),
    Case("config-bool-for-int", with_sets("tune.steps=true"), "tune.steps: expects a number, not true / false"),
    Case("config-bool-for-int-file", user_config('extends = "smoke"\n[transfer]\nsteps = true\n'), "transfer.steps"),
    Case("config-bool-for-float", with_sets("privacy.epsilon=true"), "privacy.epsilon"),
    Case("config-bool-in-int-list", with_sets("distill.blocks=[0, true]"), "distill.blocks"),
    Case("config-fractional-int", with_sets("tune.batch_size=2.5"), "tune.batch_size"),
    Case("config-negative", with_sets("tune.steps=-3"), "tune.steps"),
    Case("config-alpha-out-of-range", with_sets("transfer.alpha=1.5"), "alpha must be in [0, 1]"),
    Case("config-home-of-no-user", with_sets('models.large="~nobody-here-at-all/model"'), "is not a usable name or path"),
    Case("config-name-too-long", with_sets(f'task.source="{"d" * 300}.csv"'), "File name too long"),
    Case("config-corpus-home-of-no-user", with_sets('distill.corpus=["amazon", "~nobody-here-at-all/c"]'),
         "distill.corpus: '~nobody-here-at-all/c' is not a usable"),
    Case("config-non-utf8", user_config(b'extends = "smoke"\n# caf\xe9\n'), "not UTF-8"),
    Case("config-toml-syntax", user_config('extends = "smoke"\n[tune\nlr = \n'), "not valid TOML", subprocess=True),
    Case("config-missing-file", lambda tmp: ["run", "--config", str(tmp / "nope.toml")], "not found"),
    Case("cli-unknown-option", lambda tmp: ["run", "--bogus"], "No such option: --bogus", subprocess=True),
    Case("cli-unknown-command", lambda tmp: ["runn"], "No such command 'runn'", subprocess=True),
    Case("config-missing-extends", user_config('extends = "no-such-preset"\n'), "unknown preset 'no-such-preset'"),
    Case("config-extends-not-a-string", user_config("extends = 5\n"), "extends must be a preset name in quotes"),
    Case("config-missing-section", user_config('[tune]\nlr = 0.1\n'), "config: models: required but missing"),
    Case("config-missing-key", user_config('[models]\nsmall = "x"\n[task]\nsource = "smoke"\n[public]\nsource = "smoke"\n'),
         "config: models.large: required but missing"),
    Case("config-unknown-preset", lambda tmp: ["run", "--preset", "smoek", "--out", str(tmp / "run")],
         "did you mean smoke?"),
    Case("config-set-without-value", with_sets("tune.lr"), "KEY=VALUE"),
    Case("config-markup-in-value", with_sets('task.source="[/]x[bold]y.csv"'), "[/]x[bold]y.csv"),
]

TEMPLATES_AND_WORDS = [
    Case("template-stray-brace", with_sets('task.template="{text It was"'), "stray '{' or '}'"),
    Case("template-stray-close", with_sets('task.template="{text} It was }"'), "stray '{' or '}'"),
    Case("template-empty-braces", with_sets('task.template="{} It was"'), "empty '{}'"),
    Case("template-without-text", with_sets('task.template="It was"'), "has no {text}"),
    Case("template-unknown-field", with_sets('task.template="{review} It was"'), "names {review}"),
    Case("template-public-stray", with_sets('public.template="{text} It was {"'), "public.template"),
    Case("template-distill-without-text", with_sets('distill.template="It was"'), "distill.template"),
    Case("label-words-empty-class", with_sets('task.label_words=[["bad"], []]'), "class 1 has no label words"),
    Case("label-words-empty-word", with_sets('task.label_words=[["bad"], ["good", " "]]'), "empty label word"),
    Case("label-words-duplicate", with_sets('task.label_words=[["bad", "good"], ["good"]]'),
         "'good' appears in class 0 and class 1"),
    Case("label-words-duplicate-in-class", with_sets('task.label_words=[["bad", "bad"], ["good"]]'), "twice"),
    Case("label-names-count", with_sets('task.label_names=["ham"]'), "1 names but task.label_words has 2"),
    Case("label-names-duplicate", with_sets('task.label_names=["ham", "ham"]'), "twice"),
]

DATA = [
    Case("data-missing-file", lambda tmp: smoke_run(tmp, f"task.source={toml_str(tmp / 'nope.csv')}"), "not found"),
    Case("data-empty-file", task_file(""), "is empty"),
    Case("data-header-only", task_file("text,label\n"), "no rows"),
    Case("data-non-utf8", task_file(b"text,label\n" + b"caf\xe9 was fine,1\n" * 40), "not UTF-8"),
    Case("data-non-utf8-line", task_file(b"text,label\n" + b"fine,1\nbad,0\n" * 20 + b"caf\xe9,1\n"),
         "line 42, byte 4 of the line"),
    Case("data-extra-field", task_file("text,label\n" + "".join(f"film {i}, fine,{i % 2}\n" for i in range(40))),
         "rows have more fields than the header"),
    Case("bench-row-without-suite", lambda tmp: ["bench", "--preset", "smoke", "--row", "x", "--out", str(tmp / "b")],
         "--row picks rows of a suite"),
    Case("data-jsonl-list-text", task_file(jsonl(broken={3: '{"text": ["a", "b"], "label": 1}'}), "data.jsonl"),
         "line 4: the 'text' cell is a JSON list, not text"),
    Case("data-unknown-suffix", task_file("text,label\n", "data.xlsx"), "use a .csv"),
    Case("data-missing-text-column", task_file(rows_csv().replace("text,label", "review,label")),
         "no text column 'text'"),
    Case("data-missing-label-column", task_file(rows_csv().replace("text,label", "text,stars")),
         "no label column 'label'"),
    Case("data-string-labels", task_file(rows_csv(label=lambda i: "spam" if i % 2 else "ham")),
         'add label_names = ["ham", "spam"] under [task]', subprocess=True),
    Case("data-label-not-in-names", task_file(rows_csv(label=lambda i: "eggs" if i == 3 else "spam" if i % 2 else "ham"),
                                              "data.csv", 'task.label_names=["ham", "spam"]'),
         "label 'eggs' is not one of task.label_names"),
    Case("data-float-labels", task_file(rows_csv(label=lambda i: 0.3 if i % 2 else 0.7)), "not a whole number"),
    Case("data-out-of-range-label", task_file(rows_csv(label=lambda i: 2 if i == 5 else i % 2)),
         "label 2 is outside 0..1"),
    Case("data-negative-label", task_file(rows_csv(label=lambda i: -1 if i == 5 else i % 2)), "outside 0..1"),
    Case("data-empty-text", task_file(rows_csv(text=lambda i: "" if i == 6 else f"film {i} was fine")),
         "row 7: the 'text' cell is empty"),
    Case("data-blank-text", task_file(rows_csv(text=lambda i: "   " if i == 6 else f"film {i} was fine")),
         "row 7: the 'text' cell is empty"),
    Case("data-empty-label", task_file(rows_csv(label=lambda i: "" if i == 9 else i % 2)), "row 10: no label"),
    Case("data-jsonl-torn-line", task_file(jsonl(broken={6: '{"text": "the film was'}), "data.jsonl"),
         "line 7 is not valid JSON"),
    Case("data-jsonl-null-text", task_file(jsonl(broken={4: '{"text": null, "label": 1}'}), "data.jsonl"),
         "line 5: the 'text' cell is empty"),
    Case("data-jsonl-not-object", task_file(jsonl(broken={2: "[1, 2]"}), "data.jsonl"), "line 3 is not a JSON object"),
    Case("data-one-class", task_file(rows_csv(label=lambda i: 1)), "holds only class 1"),
    Case("data-public-smaller-than-size", with_sets("public.size=500"), "public.size = 500"),
    Case("data-public-file-smaller", public_file(rows_csv(20), "public.csv", "public.size=64"),
         "has only 16 rows"),  # a single file's train split: 80 % of its rows
    Case("data-public-empty-text", public_file(rows_csv(80, text=lambda i: "" if i % 10 == 3 else f"film {i}")),
         "the 'text' cell is empty"),
    Case("data-public-header-only", public_file("text\n"), "no rows"),
]

def smoke_toml() -> str:
    from engine.config import to_toml
    from engine.presets import load_config
    return to_toml(load_config("smoke", None, []))


def cache_is_a_file(tmp: Path) -> list[str]:
    """$POST_CACHE names a file (the test restores the variable afterwards)."""
    (tmp / "c").write_text("x")
    os.environ["POST_CACHE"] = str(tmp / "c")
    return smoke_run(tmp)


def resume_with_processes(tmp: Path) -> list[str]:
    """A run folder continued with several processes."""
    folder = run_folder(smoke_toml(), "run")(tmp)[1]
    return ["run", "--resume", folder, "--nproc", "2"]


def out_is_a_file(*command: str) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        (tmp / "a-file").write_text("x")
        return [*command, "--out", str(tmp / "a-file")]
    return make


RUN_FOLDERS = [
    Case("folder-out-is-a-file", out_is_a_file("run", "--preset", "smoke"), "where post needs a folder", subprocess=True),
    Case("folder-cache-is-a-file", cache_is_a_file, "$POST_CACHE is"),
    Case("folder-out-is-a-file-tune", out_is_a_file("tune", "--preset", "smoke"), "where post needs a folder"),
    Case("folder-out-is-a-file-kit", out_is_a_file("kit", "build", "--preset", "smoke"), "where post needs a folder"),
    Case("folder-missing", lambda tmp: ["tune", str(tmp / "no-such-run")], "does not exist"),
    Case("folder-is-a-file", lambda tmp: (tmp / "a-file").write_text("x") and ["transfer", str(tmp / "a-file")],
         "is a file, not a run folder", subprocess=True),
    Case("folder-empty", run_folder(None, "eval"), "not a run folder (no config.toml)"),
    Case("folder-resume-missing", lambda tmp: ["run", "--resume", str(tmp / "no-such-run")], "does not exist"),
    Case("folder-import-missing", lambda tmp: ["eval", str(tmp / "no-such-run"), "--from", str(tmp / "owner")],
         "give the folder a run wrote"),
    Case("folder-resume-several-processes", resume_with_processes, "new run folder only", subprocess=True),
    Case("folder-new-for-a-later-stage", lambda tmp: ["tune", "--preset", "smoke", "--out", str(tmp / "new")],
         "run post distill --out"),
    Case("folder-garbage-config", run_folder("this is {not toml", "transfer"), "not valid TOML"),
    Case("folder-binary-config", run_folder(b"\x89PNG\r\n\x1a\n\x00\xff", "tune"), "not UTF-8"),
    Case("folder-config-unknown-key", run_folder('[tune]\nlr_rate = 1\n', "tune"), "unknown key tune.lr_rate"),
]

CERTIFICATES = [
    Case("cert-changed-epsilon", tampered(lambda c: c.__setitem__("epsilon", c["epsilon"] - 0.5)),
         "accountant gives", subprocess=True),
    Case("cert-missing-key", tampered(drop("history")), "missing history"),
    Case("cert-not-json", tampered(raw=b'{"epsilon": 1.2, '), "not a readable privacy certificate"),
    Case("cert-not-utf8", tampered(raw=b"\xff\xfe{}"), "not a readable privacy certificate"),
    Case("cert-json-array", tampered(raw=b"[1, 2, 3]"), "a JSON list, not an object"),
    Case("cert-wrong-steps", tampered(setting("steps", 41)), "history holds 40 steps"),
    Case("cert-wrong-type", tampered(setting("delta", "small")), "delta has the wrong type"),
    Case("cert-bool-steps", tampered(setting("steps", True)), "steps has the wrong type"),
    Case("cert-zero-examples", tampered(setting("n_examples", 0)), "n_examples"),
    Case("cert-bad-history", tampered(setting("history", [[1.1, 0.05]])), "[noise_multiplier, sample_rate, steps]"),
    Case("cert-changed-sigma", tampered(setting("noise_multiplier", 2.0)), "differs from the recorded"),
    Case("cert-single-file", tampered(setting("epsilon", 0.01), as_run=False), "accountant gives"),
    Case("cert-none-in-run", lambda tmp: (tmp / "plain-run").mkdir() or ["privacy", "verify", str(tmp / "plain-run")],
         "no privacy certificate"),
]

CASES = CONFIG + TEMPLATES_AND_WORDS + DATA + RUN_FOLDERS + CERTIFICATES


def _tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def _invoke(args: list[str], cwd: Path, real: bool) -> tuple[int, str, str]:
    if not real:
        result = runner.invoke(app, args)
        return result.exit_code, result.stdout, result.stderr
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-m", "post_tui.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    return done.returncode, done.stdout, done.stderr


def test_the_matrix_is_big_and_ids_are_unique():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(case, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # a run without --out would land in work/runs
    monkeypatch.setenv("POST_CACHE", os.environ.get("POST_CACHE", ""))  # restored after a case that points it elsewhere
    args = case.make(work)
    before = _tree(tmp_path)
    code, out, err = _invoke(args, work, case.subprocess)
    assert code == 2, f"exit {code}\nstdout: {out}\nstderr: {err}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"stderr is not one line: {err!r}"
    assert lines[0].startswith("error: ")
    assert case.needle in lines[0], lines[0]
    assert "Traceback" not in out + err
    left = _tree(tmp_path) - before
    if left == {work / "runs"} and not any((work / "runs").iterdir()):
        left = set()  # the empty parent of the default run folders may stay; no run folder does
    assert not left, f"left behind: {sorted(map(str, left))}"


# ---------------------------------------------------------------- the happy side of the same rules

def test_label_names_map_in_label_word_order():
    rows = [{"label": "spam"}, {"label": " ham "}, {"label": "spam"}]
    assert _labels(rows, "label", 2, "d", ["ham", "spam"]) == [1, 0, 1]
    stars = [{"label": 5}, {"label": 1.0}, {"label": "5"}]  # names that look like numbers: matched as written
    assert _labels(stars, "label", 2, "d", ["1", "5"]) == [1, 0, 1]


def test_whole_floats_and_numerals_are_class_indices():
    rows = [{"label": 1.0}, {"label": 0}, {"label": "1"}, {"label": " 0.0 "}]
    assert _labels(rows, "label", 2, "d") == [1, 0, 1, 0]
    with pytest.raises(PostError, match="not a whole number"):
        _labels([{"label": "0.5"}], "label", 2, "d")


def test_string_labels_error_lists_the_values_and_the_line():
    with pytest.raises(PostError, match=r'labels are names \(negative, positive\).*label_names = \["negative", "positive"\]'):
        _labels([{"label": "positive"}, {"label": "negative"}], "label", 2, "d")


def test_templates_with_literal_braces_and_named_fields_are_fine():
    from engine.presets import load_config
    cfg = load_config("smoke", overrides=['task.template="{{note}} {text} It was"'])
    assert cfg.task.template == "{{note}} {text} It was"
    cfg = load_config("smoke", overrides=['task.text_fields=["premise", "hypothesis"]',
                                          'task.template="{premise} ? {hypothesis} It was"'])
    assert cfg.task.text_fields == ["premise", "hypothesis"]


def test_public_size_equal_to_the_data_is_fine(tmp_path):
    from engine.config import PublicConfig
    from engine.data.tasks import load_public
    from engine.tiny import build_tokenizer
    path = tmp_path / "public.csv"
    path.write_text(rows_csv(20))
    cfg = PublicConfig(source=str(path), size=16)  # the file's train split: 80 % of 20 rows
    assert len(load_public(cfg, build_tokenizer(), 0)) == 16


def test_a_csv_with_string_labels_loads_with_label_names(tmp_path):
    from engine.config import TaskConfig
    from engine.data.tasks import load_task
    from engine.tiny import build_tokenizer
    path = tmp_path / "mail.csv"
    path.write_text(rows_csv(40, label=lambda i: "spam" if i % 2 else "ham", text=lambda i: f"mail {i} was {i % 2}"))
    cfg = TaskConfig(source=str(path), label_words=[["bad"], ["good"]], label_names=["ham", "spam"])
    splits = load_task(cfg, build_tokenizer(), 0)
    assert sum(len(s) for s in splits.values()) == 40
    tok = build_tokenizer()
    for split in splits.values():  # each example's label is the class its text was written for
        for ids, label in zip(split.input_ids, split.labels):
            assert tok.decode(ids).strip().endswith(f"was {label} It was")


def test_a_byte_order_mark_is_not_an_error(tmp_path):
    from engine.data.sources import read_split
    from engine.presets import load_config
    path = tmp_path / "mine.toml"
    path.write_bytes('\ufeffextends = "smoke"\n[tune]\nlr = 0.2\n'.encode())
    assert load_config(config_file=path).tune.lr == 0.2
    data = tmp_path / "d.jsonl"
    data.write_bytes(("\ufeff" + jsonl(10)).encode())
    assert read_split(str(data), "train") and all("text" in r for r in read_split(str(data), "train"))


def test_many_names_ask_whether_the_label_column_is_right():
    rows = [{"label": f"sentence {i}"} for i in range(30)]
    with pytest.raises(PostError, match="30 different names .* is task.label_field the label column"):
        _labels(rows, "label", 2, "d")
    with pytest.raises(PostError, match="remove task.label_names"):
        _labels([{"label": 0}], "label", 2, "d", ["ham", "spam"])

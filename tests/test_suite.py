"""`post bench --suite`: rows are ordinary runs of one base preset, a JSON per row, and a re-run resumes."""
import json

import pytest
from typer.testing import CliRunner

from engine.errors import PostError
from engine.suite import row_configs, suite_names
from post_tui.cli import app

runner = CliRunner()

SUITE = '''
base = "smoke"
[all]
"eval.full_pt_steps" = 20
"transfer.methods" = ["post", "direct", "inference"]
"tune.steps" = 20
"transfer.steps" = 10
"distill.steps" = 10
[tasks.smoke]
"task.source" = "smoke"
"public.source" = "smoke"
"public.split" = "corpus"
[tasks.smoke-cue]
"task.source" = "smoke"
"task.template" = "{text} So it was"
"public.source" = "smoke"
"public.split" = "corpus"
[[rows]]
name = "a"
task = "smoke"
large = "tiny:gpt2"
[[rows]]
name = "b"
task = "smoke-cue"
large = "tiny:gpt2"
'''


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    import os
    os.environ["POST_CACHE"] = str(tmp_path_factory.mktemp("suite-cache"))
    root = tmp_path_factory.mktemp("suite")
    (root / "tiny.toml").write_text(SUITE)
    args = ["bench", "--suite", str(root / "tiny.toml"), "--out", str(root / "runs"), "--results", str(root / "results")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return root, args


def test_each_row_is_a_run_with_a_json(suite_run):
    root, _ = suite_run
    for row in ("a", "b"):
        report = json.loads((root / "results" / f"{row}.json").read_text())
        assert set(report["accuracy"]) >= {"full_zs", "full_pt", "cpt", "direct", "post", "inference"}
        assert set(report["validation"]) == set(report["accuracy"])  # every method also scored on validation
        assert report["minutes"]["total"] > 0 and (root / "runs" / row / "results.json").is_file()
        # what the diagnostics said before the transfer, beside the gap it then closed
        assert report["diagnostics"]["values"]["prompt"]["shift_ratio"] >= 0
        assert isinstance(report["diagnostics"]["warnings"], list)
        assert {c["name"] for c in report["verdict"]} >= {"post_above_zero_shot", "student_prompt_works"}
        # the machine comes from the stage records (where each stage ran), not from whoever wrote the report
        eval_record = json.loads((root / "runs" / row / "eval" / "done.json").read_text())
        assert report["machine"] == eval_record["machine"] and eval_record["machine"]["torch"]
        assert report["runtime"] == {"seed": 0, "dtype": "float32"}
        assert report["student"] is None  # distilled from the large model, as method.distill says
        assert len(report["machines"]) <= 1  # one process ran every stage here (empty where no CPU is named)
    table = (root / "results" / "suite.md").read_text()
    assert "| a |" in table and "| b |" in table and "Mean gap closed over 2 rows" in table
    a = json.loads((root / "results" / "a.json").read_text())
    assert "| test n | α |" in table and f"| a | 2 | {a['test_examples']} | {a['alpha']['post']:g} |" in table


def test_rows_share_the_method_settings(suite_run):
    root, _ = suite_run
    a, b = (json.loads((root / "results" / f"{r}.json").read_text()) for r in ("a", "b"))
    assert a["method"] == {**b["method"], "distill": a["method"]["distill"]}  # only the cue may differ
    assert a["method"]["transfer"]["steps"] == 10


def test_rerun_skips_finished_rows(suite_run):
    root, args = suite_run
    watched = [root / "runs" / r / s for r in ("a", "b") for s in ("eval/done.json", "tune/prompt.safetensors")]
    before = [p.stat().st_mtime_ns for p in watched]
    dated = json.loads((root / "results" / "a.json").read_text())["date"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert [p.stat().st_mtime_ns for p in watched] == before
    assert json.loads((root / "results" / "a.json").read_text())["date"] == dated  # the row's date, not the report's


def test_rerun_resumes_an_interrupted_row(suite_run):
    root, args = suite_run
    prompt = root / "runs" / "b" / "tune" / "prompt.safetensors"
    before = prompt.stat().st_mtime_ns
    (root / "runs" / "b" / "transfer" / "done.json").unlink()  # as if killed during the transfer
    result = runner.invoke(app, args + ["--row", "b"])
    assert result.exit_code == 0, result.output
    assert prompt.stat().st_mtime_ns == before and (root / "runs" / "b" / "transfer" / "done.json").is_file()
    # row a was not asked for, but it finished: the table still holds it, in the suite's order
    table = (root / "results" / "suite.md").read_text()
    assert table.index("| a |") < table.index("| b |") and "Mean gap closed over 2 rows" in table


def test_a_row_left_out_is_in_the_table_only_while_its_report_is_current(suite_run):
    root, args = suite_run
    report = root / "results" / "a.json"
    kept = report.read_text()
    report.write_text(kept.replace('"results_sha256": "', '"results_sha256": "0'))  # made from another results.json
    try:
        result = runner.invoke(app, args + ["--row", "b"])
        assert result.exit_code == 0, result.output
        table = (root / "results" / "suite.md").read_text()
        assert "| a |" not in table and "no current report): a." in table
    finally:
        report.write_text(kept)


def test_a_row_another_process_finishes_meanwhile_joins_the_table(suite_run):
    """Two processes, --row a and --row b, started together: whichever finishes last still writes both."""
    from engine.suite import run_suite
    from post_tui.cli import _execute
    root, _ = suite_run
    report = root / "results" / "a.json"
    kept = report.read_text()
    report.unlink()  # row a's process has not finished yet when this one starts
    (root / "runs" / "b" / "transfer" / "done.json").unlink()  # row b has work left

    def run_b(name, config, run_dir):
        report.write_text(kept)  # meanwhile, the other process finishes row a
        return _execute(config, run_dir, resume=True)

    found = run_suite(str(root / "tiny.toml"), root / "runs", root / "results", run_b, only=["b"])
    assert list(found["rows"]) == ["a", "b"] and not found["not_run"]


def test_a_task_card_cannot_tune_the_method(tmp_path):
    (tmp_path / "bad.toml").write_text(SUITE.replace('"public.split" = "corpus"\n[[rows]]',
                                                     '"public.split" = "corpus"\n"transfer.alpha" = 1.0\n[[rows]]'))
    with pytest.raises(PostError, match="transfer.alpha is a method setting"):
        row_configs(str(tmp_path / "bad.toml"))


def test_shipped_suite_rows_validate():
    assert "offline" in suite_names()
    rows = row_configs("offline")
    assert {c.distill.steps for c in rows.values()} == {rows["mr-smollm2"].distill.steps}
    assert all(c.eval.full_pt for c in rows.values())
    assert {c.transfer.alpha for c in rows.values()} == {"select"}  # the starter preset's rule, not a per-task α
    pairs = {(c.task.source, c.models.large) for c in rows.values()}
    assert pairs == {(t, m) for t in ("mr", "tweets", "bbc", "spam", "sms") for m in ("smollm2-135m", "gemma3-270m")}


def test_suite_with_preset_is_one_line_error(tmp_path):
    result = runner.invoke(app, ["bench", "--suite", "offline", "--preset", "smoke"])
    assert result.exit_code == 2 and "--suite runs the suite's own rows" in result.output


def test_the_tables_post_above_is_the_verdicts_rule():
    from engine.suite import summary
    from engine.verdict import checks
    tie = {"full_zs": 0.60, "cpt": 0.75, "direct": 0.55, "post": 0.6 + 0.5 / 300}  # above by less than one example
    rows = {name: {"gap_closed": None, "verdict": checks(acc, 300, 2)} for name, acc in
            {"tie": tie, "win": {**tie, "post": 0.70}, "unscored": {"cpt": 0.75}}.items()}
    beats = summary(rows)["post_above"]
    assert beats["tie"] == {"post>direct": True, "post>full_zs": False}
    assert beats["win"] == {"post>direct": True, "post>full_zs": True}
    assert beats["unscored"] == {"post>direct": None, "post>full_zs": None}


def test_under_select_the_rows_validation_post_is_the_chosen_candidate(tmp_path, monkeypatch):
    monkeypatch.setenv("POST_CACHE", str(tmp_path / "cache"))
    one_row = SUITE.split("[[rows]]")[0] + '[[rows]]\nname = "s"\ntask = "smoke"\nlarge = "tiny:gpt2"\n'
    one_row = one_row.replace('"transfer.methods" = ["post", "direct", "inference"]',
                              '"transfer.methods" = ["post", "output", "shift", "direct"]\n"transfer.alpha" = "select"')
    (tmp_path / "select.toml").write_text(one_row)
    result = runner.invoke(app, ["bench", "--suite", str(tmp_path / "select.toml"), "--out", str(tmp_path / "runs"),
                                 "--results", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "results" / "s.json").read_text())
    chosen = json.loads((tmp_path / "runs" / "s" / "eval" / "alpha.json").read_text())["method"]
    # POST is the chosen prompt on both splits: its test accuracy is already the chosen one's
    assert report["accuracy"]["post"] == report["accuracy"][chosen]
    assert report["validation"]["post"] == report["validation"][chosen]
    # the same prompts evaluated under another α rule are not this row's results: the row is not finished
    from engine.suite import finished
    config = row_configs(str(tmp_path / "select.toml"))["s"]
    assert finished(config, tmp_path / "runs" / "s")
    assert not finished(config.model_copy(update={"transfer": config.transfer.model_copy(update={"alpha": 0.5})}),
                        tmp_path / "runs" / "s")
    choice = tmp_path / "runs" / "s" / "eval" / "alpha.json"
    choice.write_text(choice.read_text().replace('"rule": "', '"rule": "an earlier rule: '))
    assert not finished(config, tmp_path / "runs" / "s")  # chosen by another rule: the eval chooses again


def test_a_choice_by_the_earlier_select_rule_stands_unless_it_was_a_tie():
    from engine.alpha import EARLIER_RULE as earlier, RULE
    from engine.suite import _same_choice_now
    assert _same_choice_now({"rule": RULE, "method": "post", "validation": {}})
    assert _same_choice_now({"rule": earlier, "method": "output",
                             "validation": {"output": 0.72, "post": 0.51, "shift": 0.39}})
    assert not _same_choice_now({"rule": earlier, "method": "post",  # mr-gemma3: a tie, settled by loss now
                                 "validation": {"output": 0.67, "post": 0.753, "shift": 0.753}})
    assert not _same_choice_now({"rule": "another", "method": "post", "validation": {"post": 0.8}})


def test_as_selected_takes_the_chosen_candidates_validation(tmp_path):
    from engine.presets import load_config
    from engine.suite import as_selected
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "alpha.json").write_text(json.dumps({"method": "shift", "alpha": 1.0}))
    val = {"post": 0.51, "output": 0.72, "shift": 0.39, "full_zs": 0.37}
    assert as_selected(load_config("starter"), tmp_path, val) == {**val, "post": 0.39}
    assert as_selected(load_config("demo"), tmp_path, val) == val  # a fixed α: post is post


def test_report_only_keeps_a_row_whose_run_folder_is_gone_and_marks_it(suite_run):
    """The reports in bench/results outlive the run folders (another machine, an earlier session): the
    table is written again from them alone, each such row marked, a stale one still left out."""
    import shutil
    root, args = suite_run
    moved = root / "runs-moved-a"
    shutil.move(str(root / "runs" / "a"), moved)
    b_report = root / "results" / "b.json"
    kept_b = b_report.read_text()
    try:
        watched = root / "runs" / "b" / "eval" / "done.json"
        before = watched.stat().st_mtime_ns
        result = runner.invoke(app, args + ["--report-only"])
        assert result.exit_code == 0, result.output
        table = (root / "results" / "suite.md").read_text()
        assert "| a † |" in table and "| b |" in table and "no run folder at its run_dir" in table and "Not in" not in table
        assert watched.stat().st_mtime_ns == before and not (root / "runs" / "a").exists()  # nothing ran
        # a report made for another config is not this row's, folder or not
        b_report.write_text(kept_b.replace('"config_digest": "', '"config_digest": "0'))
        shutil.move(str(root / "runs" / "b"), root / "runs-moved-b")
        result = runner.invoke(app, args + ["--report-only"])
        assert result.exit_code == 0, result.output
        table = (root / "results" / "suite.md").read_text()
        assert "| b" not in table and "no current report): b." in table
    finally:
        shutil.move(str(moved), root / "runs" / "a")
        if (root / "runs-moved-b").exists():
            shutil.move(str(root / "runs-moved-b"), root / "runs" / "b")
        b_report.write_text(kept_b)


def test_report_only_refuses_rows_and_a_missing_suite(suite_run):
    root, args = suite_run
    result = runner.invoke(app, args + ["--report-only", "--row", "a"])
    assert result.exit_code == 2 and "leave out --row" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["bench", "--report-only"])
    assert result.exit_code == 2 and "give --suite" in result.output and len(result.output.strip().splitlines()) == 1


def test_report_only_never_replaces_a_table_with_an_empty_one(suite_run):
    root, args = suite_run
    table = root / "results" / "suite.md"
    before = table.read_bytes()
    result = runner.invoke(app, args + ["--set", "transfer.steps=11", "--report-only"])  # the rows ran with 10
    # the same markdown file left untouched (no float trained anew): bytes compare on any machine
    assert result.exit_code == 2 and "nothing written" in result.output and table.read_bytes() == before


def test_a_row_run_under_another_out_keeps_the_other_rows_in_the_table(suite_run):
    """Rows of one results folder may run under several --out (a seed's rows split across lanes, a copy
    of a run folder redone with a changed setting): each stored report is checked against the folder it
    names, so one --row under a new --out rewrites suite.md with every current row, not that row alone."""
    import shutil
    root, args = suite_run
    b_report = root / "results" / "b.json"
    kept_b = b_report.read_text()
    shutil.copytree(root / "runs" / "b", root / "lane-2" / "b")
    try:
        elsewhere = args[:args.index("--out") + 1] + [str(root / "lane-2")] + args[args.index("--out") + 2:]
        result = runner.invoke(app, elsewhere + ["--row", "b"])
        assert result.exit_code == 0, result.output
        assert json.loads(b_report.read_text())["run_dir"] == str((root / "lane-2" / "b").resolve())  # absolute
        table = (root / "results" / "suite.md").read_text()
        assert "| a |" in table and "| b |" in table and "Mean gap closed over 2 rows" in table
        result = runner.invoke(app, args + ["--report-only"])  # the same table with no --out of lane 2's
        assert result.exit_code == 0, result.output
        assert "| a |" in result.output and "| b |" in result.output
        # the folder a report names decides whether it is current, wherever this invocation's --out points
        shutil.rmtree(root / "lane-2" / "b" / "eval")
        result = runner.invoke(app, args + ["--report-only"])
        assert result.exit_code == 0, result.output
        assert "| a |" in result.output and "| b |" not in result.output
    finally:
        b_report.write_text(kept_b)
        shutil.rmtree(root / "lane-2", ignore_errors=True)
        runner.invoke(app, args + ["--report-only"])  # suite.md of the fixture's folders again


def test_a_stored_report_shows_its_run_folders_numbers_and_an_archived_one_its_rule(suite_run):
    """The table is computed from results.json where the folder is there (an edited report cannot show
    other numbers), and an archived report made under another α rule is not current."""
    import shutil
    root, args = suite_run
    report = root / "results" / "a.json"
    kept = report.read_text()
    data = json.loads(kept)
    try:
        report.write_text(json.dumps({**data, "accuracy": {**data["accuracy"], "post": 0.99}, "gap_closed": 0.9}))
        result = runner.invoke(app, args + ["--report-only"])
        assert result.exit_code == 0, result.output
        assert "| 99.0 |" not in (root / "results" / "suite.md").read_text()
        shutil.move(str(root / "runs" / "a"), root / "runs-moved-a")
        report.write_text(json.dumps({**data, "alpha_rule": "select" if data["alpha_rule"] != "select" else 0.5}))
        result = runner.invoke(app, args + ["--report-only"])
        assert result.exit_code == 0, result.output
        assert "| a" not in (root / "results" / "suite.md").read_text()
    finally:
        if (root / "runs-moved-a").exists():
            shutil.move(str(root / "runs-moved-a"), root / "runs" / "a")
        report.write_text(kept)


def test_a_current_report_missing_a_field_is_one_line_naming_the_file(suite_run):
    root, args = suite_run
    report = root / "results" / "a.json"
    kept = report.read_text()
    try:
        report.write_text(json.dumps({k: v for k, v in json.loads(kept).items() if k != "minutes"}))
        result = runner.invoke(app, args + ["--report-only"])
        assert result.exit_code == 2 and "a.json lacks minutes" in result.output and "Traceback" not in result.output
    finally:
        report.write_text(kept)


@pytest.mark.parametrize("field, value, message", [
    ("accuracy", "x", "accuracy maps each method"),
    ("accuracy", {"post": "0.9"}, "accuracy maps each method"),
    ("test_examples", "many", "test_examples is a whole number"),
    ("minutes", [1], "minutes maps each stage"),
    ("paired", [1], "paired is an object or null"),
])
def test_an_archived_report_with_a_wrong_field_type_is_one_line_naming_the_file(suite_run, field, value, message):
    """An archived report (no run folder at its run_dir) is read as it is: a field of the wrong type is refused in
    one line, not a traceback from inside the verdict, and no table is written."""
    root, args = suite_run
    report = root / "results" / "a.json"
    kept, table = report.read_text(), (root / "results" / "suite.md").read_bytes()
    try:
        report.write_text(json.dumps({**json.loads(kept), "run_dir": str(root / "gone"), field: value}))
        result = runner.invoke(app, args + ["--report-only"])
        assert result.exit_code == 2 and "a.json is damaged" in result.output and message in result.output
        # the table as it was: not rewritten, so its very bytes (nothing recomputed)
        assert "Traceback" not in result.output and (root / "results" / "suite.md").read_bytes() == table
    finally:
        report.write_text(kept)


@pytest.mark.parametrize("under", [False, True])
def test_a_results_path_that_is_a_file_is_refused_before_any_row_runs(tmp_path, under):
    (tmp_path / "tiny.toml").write_text(SUITE)
    (tmp_path / "a-file").write_text("x")
    results = tmp_path / "a-file" / "sub" if under else tmp_path / "a-file"
    result = runner.invoke(app, ["bench", "--suite", str(tmp_path / "tiny.toml"), "--out", str(tmp_path / "runs"),
                                 "--results", str(results), "--row", "a"])
    assert result.exit_code == 2 and "--results" in result.output and "a file" in result.output
    assert result.output.count("\n") == 1 and not (tmp_path / "runs").exists()
    assert (tmp_path / "a-file").read_text() == "x"


def test_a_suite_under_another_configuration_does_not_replace_a_live_report_in_one_results_folder(suite_run):
    """Two suites given one --results (one with --set runtime.seed=1, under another --out): the second would
    write row a's report over the first's, whose run folder still holds it, and the first's table lose row a."""
    root, _ = suite_run
    report = root / "results" / "a.json"
    kept = report.read_text()
    args = ["bench", "--suite", str(root / "tiny.toml"), "--out", str(root / "runs-seed1"), "--results",
            str(root / "results"), "--row", "a", "--set", "runtime.seed=1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "under another configuration" in result.output and "own --results" in result.output
    assert report.read_text() == kept and not (root / "runs-seed1").exists()


def test_the_mean_gap_closed_is_also_given_with_each_row_capped_at_one():
    from engine.suite import summary
    acc = {"full_zs": 0.5, "full_pt": 0.8}
    rows = {"x": {"gap_closed": 1.5, "verdict": [], "accuracy": acc, "test_examples": 300},
            "y": {"gap_closed": 0.5, "verdict": [], "accuracy": acc, "test_examples": 300}}
    found = summary(rows)
    assert found["mean_gap_closed"] == pytest.approx(1.0) and found["mean_gap_closed_capped"] == pytest.approx(0.75)


def test_a_gap_within_two_standard_errors_is_named_and_left_out_of_a_second_mean():
    """88.3 → 90.6 on 213 examples (bbc-gemma3) is within noise; 55 → 81 on 300 (mr-smollm2) is not."""
    from engine.suite import gap_resolved, summary
    from post_tui.render import suite_markdown
    noisy = {"accuracy": {"full_zs": 0.883, "full_pt": 0.906, "post": 0.859}, "test_examples": 213,
             "gap_closed": -1.0, "verdict": [], "classes": 5, "minutes": {"total": 1.0}}
    clear = {"accuracy": {"full_zs": 0.553, "full_pt": 0.81, "post": 0.697}, "test_examples": 300,
             "gap_closed": 0.56, "verdict": [], "classes": 2, "minutes": {"total": 1.0}}
    assert not gap_resolved(noisy) and gap_resolved(clear)
    assert not gap_resolved({**noisy, "accuracy": {"full_zs": 0.9, "post": 0.9}})  # no reference: nothing resolved
    found = summary({"noisy": noisy, "clear": clear})
    assert found["gap_unresolved"] == ["noisy"] and found["mean_gap_closed"] == pytest.approx(-0.22)
    assert found["mean_gap_closed_resolved"] == pytest.approx(0.56)
    table = suite_markdown({"rows": {"noisy": noisy, "clear": clear}, "summary": found, "not_run": []})
    assert "by two standard errors" in table and "noisy; mean gap closed over the other rows: 0.560" in table
    below = {**clear, "accuracy": {"full_zs": 0.677, "full_pt": 0.5, "post": 0.79}}  # Full PT is no reference
    assert not gap_resolved(below) and not gap_resolved({**clear, "gap_closed": None, "accuracy": {"full_zs": 0.6, "full_pt": 0.6}})
    assert summary({"clear": clear})["mean_gap_closed_resolved"] is None  # every gap resolved: one mean is enough


def test_the_mean_gap_closed_says_how_many_rows_it_is_the_mean_of():
    """A row with no gap closed (Full PT equal to Full ZS) is not in the mean: the line says over how many it is."""
    from engine.suite import summary
    from post_tui.render import suite_markdown
    flat = {"accuracy": {"full_zs": 0.5, "full_pt": 0.5, "post": 0.6}, "test_examples": 300, "gap_closed": None,
            "verdict": [], "classes": 2, "minutes": {"total": 1.0}}
    clear = {"accuracy": {"full_zs": 0.553, "full_pt": 0.81, "post": 0.697}, "test_examples": 300,
             "gap_closed": 0.56, "verdict": [], "classes": 2, "minutes": {"total": 1.0}}
    table = suite_markdown({"rows": {"flat": flat, "clear": clear}, "summary": summary({"flat": flat, "clear": clear}),
                            "not_run": []})
    assert "Mean gap closed over 2 rows: 0.560 (the mean of the 1 with one;" in table and "is missing: flat)" in table
    table = suite_markdown({"rows": {"clear": clear}, "summary": summary({"clear": clear}), "not_run": []})
    assert "Mean gap closed over 1 row: 0.560. " in table


def test_the_table_says_when_its_rows_come_from_different_kinds_of_cpu():
    """An AMD row beside an Intel row differs by the box as well as the recipe: the table says so. Rows that
    record no machine (older reports) claim nothing, and one row whose stages ran on two kinds is named."""
    from engine.suite import summary
    from post_tui.render import suite_markdown
    row = {"accuracy": {"full_zs": 0.553, "full_pt": 0.81, "post": 0.697}, "test_examples": 300,
           "gap_closed": 0.56, "verdict": [], "classes": 2, "minutes": {"total": 1.0}}
    intel = {**row, "machine": {"cpu": "Intel(R) Xeon(R) Processor", "cpu_units": ["amx_bf16", "avx512f", "avx2"]}}
    amd = {**row, "machine": {"cpu": "AMD EPYC 7B13", "cpu_units": ["avx2"]}}
    old = {**row, "machine": {"platform": "x"}}

    def table(rows):
        return suite_markdown({"rows": rows, "summary": summary(rows), "not_run": []})
    mixed = table({"a": intel, "b": amd, "c": old})
    assert "more than one kind of machine" in mixed
    assert "Intel(R) Xeon(R) Processor (amx_bf16, avx512f, avx2): a; AMD EPYC 7B13 (avx2): b." in mixed
    assert "Not recorded (reports written before rows named their machine): c." in mixed
    one = table({"a": intel, "c": old})  # one recorded kind beside older reports: not "more than one"
    assert "more than one" not in one and "ran on one kind: Intel(R) Xeon(R) Processor (amx_bf16, avx512f, avx2)." in one
    resumed = table({"a": {**intel, "machines": ["AMD EPYC 7B13 (avx2)", "Intel(R) Xeon(R) Processor (avx2)"]}, "b": intel})
    assert "stages on AMD EPYC 7B13 (avx2) and Intel(R) Xeon(R) Processor (avx2): a" in resumed
    assert "kind" not in table({"a": row, "c": old})  # nothing recorded: the table claims nothing


def test_two_suite_tables_side_by_side(tmp_path, capsys):
    """bench/suite_pairs.py: the rows both measured, POST's difference against two standard errors, and the
    rows from different kinds of CPU named; a folder that is not there is one line and exit 2."""
    from bench import suite_pairs

    def report(folder, row, post, cpu, gap):
        folder.mkdir(exist_ok=True)
        (folder / f"{row}.json").write_text(json.dumps({
            "row": row, "test_examples": 300, "accuracy": {"post": post}, "validation": {"post": post},
            "gap_closed": gap, "alpha": {"post": 1.0}, "machine": {"cpu": cpu}}))
    a, b = tmp_path / "a", tmp_path / "b"
    report(a, "mr", 0.60, "intel", 0.2)
    report(b, "mr", 0.70, "intel", 0.6)
    report(a, "spam", 0.80, "intel", 0.7)
    report(b, "spam", 0.79, "amd", 0.6)
    report(a, "only-here", 0.5, "intel", 0.0)
    assert suite_pairs.main([str(a), str(b), "--names", "old", "new", "--out", str(tmp_path / "pairs.md")]) == 0
    table = (tmp_path / "pairs.md").read_text()
    assert "| mr | 60.0 | 70.0 | +10.0 | 7.7 |" in table and "| yes |" in table  # 2·sqrt(.24/300 + .21/300)
    assert "| spam | 80.0 | 79.0 | -1.0 |" in table and "| **no** |" in table and "only-here" not in table
    assert "new higher on test in 1, lower in 1, tied in 0" in table and "beyond two standard errors: 1" in table
    assert "Mean gap closed 0.450 (old) against 0.600 (new)" in table
    # with the run folders' predictions: the paired test on the same test examples
    for out, post in ((tmp_path / "ra", [0, 1, 1, 0]), (tmp_path / "rb", [1, 1, 0, 0])):
        (out / "mr" / "eval").mkdir(parents=True)
        (out / "mr" / "eval" / "predictions.json").write_text(json.dumps({"labels": [0, 1, 1, 1], "post": post}))
    assert suite_pairs.main([str(a), str(b), "--runs", str(tmp_path / "ra"), str(tmp_path / "rb")]) == 0
    paired = capsys.readouterr().out
    assert "| 2 / 0 (0.5) |" in paired and "| — |" in paired  # mr: examples 0 and 2 only a's; spam has no folders
    assert suite_pairs.main([str(tmp_path / "missing"), str(b)]) == 2
    assert "is not a folder of suite row reports" in capsys.readouterr().err
    assert suite_pairs.main([str(a), str(b), "--runs", str(tmp_path / "ra"), str(tmp_path / "nowhere")]) == 2
    assert "is not a suite's run folder" in capsys.readouterr().err  # not a silent column of dashes
    (b / "broken.json").write_text('{"row": "mr", ')  # bad input: one line, exit 2, no traceback
    assert suite_pairs.main([str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "broken.json is not readable JSON" in err and "Traceback" not in err


def test_one_suite_over_seeds(tmp_path, capsys):
    """bench/suite_seeds.py: each row's gap closed per seed and its mean; the table's mean over the rows
    measured at every seed, with the standard error of the seed-to-seed spread; rows in the suite's order."""
    from bench import suite_seeds

    def report(folder, row, gap, direct_ok=True, zs=0.5, pt=0.8):
        folder.mkdir(exist_ok=True)
        (folder / f"{row}.json").write_text(json.dumps({
            "suite": "offline", "row": row, "test_examples": 300, "gap_closed": gap,
            "accuracy": {"post": 0.7, "full_zs": zs, "full_pt": pt},
            "verdict": [{"name": "post_above_direct", "status": "ok" if direct_ok else "warn"},
                        {"name": "post_above_zero_shot", "status": "ok"}]}))
    s0, s1 = tmp_path / "s0", tmp_path / "s1"
    report(s0, "tweets-smollm2", 0.6)
    report(s1, "tweets-smollm2", 0.8)
    report(s0, "mr-smollm2", 0.5, direct_ok=False)
    report(s1, "mr-smollm2", 0.3)
    report(s0, "bbc-gemma3", 0.9, zs=0.88, pt=0.9)  # one seed only, and a noise denominator
    assert suite_seeds.main([str(s0), str(s1), "--names", "0", "1", "--out", str(tmp_path / "seeds.md")]) == 0
    table = (tmp_path / "seeds.md").read_text()
    lines = table.splitlines()
    assert lines[2].startswith("| mr-smollm2 |") and lines[3].startswith("| tweets-smollm2 |")  # the suite's order
    assert "| mr-smollm2 | 0.50 | 0.30 | 0.40 | **no** yes | yes yes |" in table
    assert "| bbc-gemma3 (noise at seed 0) | 0.90 | — | 0.90 |" in table
    # rows' means 0.4, 0.7 and 0.9 → 0.667; pooled variance 0.02 (2 degrees of freedom), the row means'
    # variances 0.02/2, 0.02/2, 0.02/1 → SE sqrt(0.04) / 3 = 0.0667
    assert "Mean gap closed over the 3 rows (each row's mean over its seeds): **0.667** ± 0.067" in table
    assert "per-row SD 0.14, pooled over 2 degrees of freedom" in table
    # bbc-gemma3's one measurement has a noise denominator: without it, 0.55 ± sqrt(0.02 · 2 / 2) / 2
    assert "whose gap is noise, over the 2 rows: **0.550** ± 0.071" in table
    assert "Per seed, over the rows measured at it: seed 0 0.667 over 3 rows; seed 1 0.550 over 2 rows." in table
    capsys.readouterr()
    assert suite_seeds.main([str(s0), str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert suite_seeds.main([str(s0), str(s1), "--names", "only-one"]) == 2
    assert "one name per folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert suite_seeds.main([str(s0), str(tmp_path / "empty")]) == 2
    assert "holds no suite row report" in capsys.readouterr().err
    (s1 / "odd.json").write_text(json.dumps({"row": "odd", "test_examples": 3, "accuracy": {"post": 0.5}}))
    assert suite_seeds.main([str(s0), str(s1)]) == 2  # one line, not a KeyError from deep in the table
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the report of odd has no gap_closed" in err


def test_the_table_reads_post_against_direct_with_the_paired_test():
    """Rows whose eval kept its predictions are judged by the exact McNemar test; older reports are named."""
    from engine.suite import summary
    from post_tui.render import suite_markdown
    row = {"accuracy": {"full_zs": 0.553, "full_pt": 0.81, "post": 0.697, "direct": 0.56}, "test_examples": 300,
           "gap_closed": 0.56, "verdict": [], "classes": 2, "minutes": {"total": 1.0}}
    won = {**row, "paired": {"direct": {"only_post": 50, "only_direct": 10, "p": 0.0001},
                             "full_zs": {"only_post": 14, "only_full_zs": 18, "p": 0.6}}}
    lost = {**row, "paired": {"direct": {"only_post": 10, "only_direct": 40, "p": 0.0001}}}
    rows = {"a": won, "b": lost, "c": row}
    found = summary(rows)["paired"]
    assert found["direct"] == {"above": ["a"], "below": ["b"], "undecided": [], "not_paired": ["c"]}
    assert found["full_zs"] == {"above": [], "below": [], "undecided": ["a"], "not_paired": ["b", "c"]}
    table = suite_markdown({"rows": rows, "summary": summary(rows), "not_run": []})
    assert ("Paired on the same test examples (exact McNemar, p < 0.05), POST vs Direct: above in 1, below in 1 (b), "
            "not told apart in 0; vs Full ZS: above in 0, below in 0, not told apart in 1 (a).") in table
    assert "Not paired (reports written before the eval kept its predictions): b, c." in table
    assert "Paired" not in suite_markdown({"rows": {"c": row}, "summary": summary({"c": row}), "not_run": []})


def test_the_table_names_rows_that_do_not_beat_the_most_common_class():
    from engine.suite import summary
    from engine.verdict import checks
    from post_tui.render import suite_markdown
    ham = {"class": 0, "accuracy": 0.7}
    rows = {}
    for name, acc, base in (("spam", {"full_zs": 0.34, "full_pt": 0.83, "post": 0.66}, ham),
                            ("spam-gemma", {"full_zs": 0.34, "full_pt": 0.69, "post": 0.65}, ham),
                            ("tweets", {"full_zs": 0.7, "full_pt": 0.86, "post": 0.83}, {"class": 1, "accuracy": 0.68}),
                            ("old", {"full_zs": 0.5, "full_pt": 0.8, "post": 0.7}, None)):
        rows[name] = {"gap_closed": 0.5, "verdict": checks(acc, 300, 2, baseline=base), "classes": 2,
                      "test_examples": 300, "accuracy": acc, "minutes": {"total": 1.0}}
    found = summary(rows)["majority"]
    assert found == {"post_not_above": ["spam", "spam-gemma"], "full_pt_not_above": ["spam-gemma"], "unknown": ["old"]}
    table = suite_markdown({"rows": rows, "summary": summary(rows)})
    assert "POST not above saying the training split's most common class every time: spam, spam-gemma" in table
    assert "full PT not above it either: spam-gemma" in table and "before 2026-12-06): old." in table

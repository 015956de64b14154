"""User data files read as the user wrote them: quotes, bytes, duplicates, a template that fills
max_length, and messages that point at the real cause. Each test builds small files in tmp_path and
calls the loaders (one runs `post run` in process, as tests/test_bad_input.py does)."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.config import TaskConfig
from engine.data.sources import _read_file, read_split
from engine.data.tasks import _labels, load_task
from engine.errors import PostError
from engine.tiny import build_tokenizer
from post_tui.cli import app

WORDS = [["bad"], ["good"]]


def texts(n: int = 40, special: dict[int, str] | None = None) -> list[str]:
    """n distinct texts, some replaced (index 0-based)."""
    special = special or {}
    return [special.get(i, f"the film number {i} was fine") for i in range(n)]


def write_rows(path: Path, texts: list[str], sep: str = ",", labels=None) -> Path:
    labels = labels or [i % 2 for i in range(len(texts))]
    path.write_text(f"text{sep}label\n" + "".join(f"{t}{sep}{label}\n" for t, label in zip(texts, labels)))
    return path


def load(path: Path, **task) -> dict:
    return load_task(TaskConfig(source=str(path), label_words=WORDS, **task), build_tokenizer(), 0)


def load_noted(path: Path, **task) -> tuple[dict, list[str]]:
    """The splits, and the notes load_task has for the user (a run logs them as warnings)."""
    notes: list[str] = []
    splits = load_task(TaskConfig(source=str(path), label_words=WORDS, **task), build_tokenizer(), 0, warn=notes.append)
    return splits, notes


# ---------------------------------------------------------------- 1. quotes in TSV and CSV

STRAY = {3: '"Titanic" is great', 5: '"Best film ever, he said', 10: 'I said "meh'}


def test_tsv_quotes_are_part_of_the_text(tmp_path):
    rows = _read_file(write_rows(tmp_path / "d.tsv", texts(40, STRAY), sep="\t"))
    assert len(rows) == 40
    assert [r["text"] for r in rows] == texts(40, STRAY)
    assert [r["label"] for r in rows] == [i % 2 for i in range(40)]


def test_a_tab_inside_a_tsv_text_is_refused(tmp_path):
    path = write_rows(tmp_path / "d.tsv", texts(40, {7: "half\tand half"}), sep="\t")
    with pytest.raises(PostError, match=r"d\.tsv line 9 has 3 tab-separated fields.*cannot hold a tab"):
        _read_file(path)


def test_csv_quoting_loads_and_a_stray_quote_that_swallows_rows_is_refused(tmp_path):
    legit = tmp_path / "ok.csv"
    legit.write_text('text,label\n"a, b",1\n"say ""hi""",0\n"line one\nline two",1\n\nplain,0\n')
    assert [(r["text"], r["label"]) for r in _read_file(legit)] == [
        ("a, b", 1), ('say "hi"', 0), ("line one\nline two", 1), ("plain", 0)]
    opened = write_rows(tmp_path / "open.csv", texts(40, {5: '"Best film ever, he said', 10: 'I said "meh'}))
    with pytest.raises(PostError, match=r"open\.csv row 6 .*stray double quote — double it \(\"\"\) or remove it"):
        _read_file(opened)
    closed = write_rows(tmp_path / "closed.csv", texts(40, {5: '"Best film ever, he said', 10: 'she said no"'}))
    with pytest.raises(PostError, match=r"closed\.csv row 6: the 'text' cell runs over several lines.*double it"):
        _read_file(closed)


def test_a_tsv_quoted_as_pandas_and_csv_write_it_reads_as_written(tmp_path):
    import pandas as pd
    said = ['He said "hi" to me today', "a plain text", 'a tab\there, quoted']
    path = tmp_path / "d.tsv"
    pd.DataFrame({"text": said, "label": [0, 1, 0]}).to_csv(path, sep="\t", index=False)
    assert '""hi""' in path.read_text()  # pandas encloses the cell and doubles its quotes
    assert [r["text"] for r in _read_file(path)] == said


def test_a_tsv_cell_quoted_over_several_lines_is_one_text(tmp_path):
    import csv
    path = tmp_path / "d.tsv"
    with path.open("w", newline="") as handle:
        out = csv.writer(handle, delimiter="\t")
        out.writerow(["text", "label"])
        out.writerows([f"review {i}", i % 2] for i in range(10))
        out.writerow(["a long review\nthat spans two lines", 1])
    rows = _read_file(path)  # read line by line it was two rows, one without a label
    assert len(rows) == 11 and (rows[-1]["text"], rows[-1]["label"]) == ("a long review\nthat spans two lines", 1)
    # quotes that open on one line and close on the next, each line a whole record: lines, as written
    both = tmp_path / "both.tsv"
    both.write_text('text\tlabel\n"Great\t1\nmovie"\t0\nplain\t1\n')
    assert [r["text"] for r in _read_file(both)] == ['"Great', 'movie"', "plain"]


def test_a_quoted_csv_cell_over_several_lines_of_prose_loads(tmp_path):
    import csv
    path = tmp_path / "d.csv"
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["text", "label"])
        out.writerows([f"review {i}", i % 2] for i in range(10))
        out.writerow(["First line of a long review.\nSecond line, with a comma.", 1])  # one comma, as the header
    assert _read_file(path)[-1]["text"] == "First line of a long review.\nSecond line, with a comma."


def test_a_csv_text_that_goes_on_after_its_closing_quote_is_refused(tmp_path):
    path = write_rows(tmp_path / "d.csv", texts(40, {3: '"Titanic" is great'}))
    with pytest.raises(PostError, match=r"d\.csv row 4 .*stray double quote"):
        _read_file(path)


# ---------------------------------------------------------------- 2. bytes in parquet

def test_a_binary_parquet_text_column_is_decoded(tmp_path):
    import pandas as pd
    path = tmp_path / "d.parquet"
    pd.DataFrame({"text": [t.encode() for t in texts(40)], "label": [i % 2 for i in range(40)]}).to_parquet(path)
    as_bytes = load(path)
    path_text = tmp_path / "t.parquet"
    pd.DataFrame({"text": texts(40), "label": [i % 2 for i in range(40)]}).to_parquet(path_text)
    as_text = load(path_text)
    assert as_bytes["train"].input_ids == as_text["train"].input_ids
    assert "b'" not in build_tokenizer().decode(as_bytes["train"].input_ids[0])


def test_a_binary_parquet_is_the_same_data_set_as_its_csv_for_the_ledger(tmp_path):
    # the ledger reads rows as they enter, not through the loader: bytes there would be "b'...'" rows,
    # another data set, and two DP releases on the same examples would not compose
    import pandas as pd
    from engine.privacy import boundary, ledger
    labels = [i % 2 for i in range(40)]
    pd.DataFrame({"text": [t.encode() for t in texts(40)], "label": labels}).to_parquet(tmp_path / "d.parquet")
    write_rows(tmp_path / "d.csv", texts(40), labels=labels)
    as_bytes, as_csv = (TaskConfig(source=str(tmp_path / name), label_words=WORDS) for name in ("d.parquet", "d.csv"))
    assert ledger.task_key(as_bytes, 0) == ledger.task_key(as_csv, 0)
    assert boundary.private_texts(as_bytes, 0) == boundary.private_texts(as_csv, 0) != set()


def test_a_binary_parquet_cell_that_is_not_utf8_is_refused(tmp_path):
    import pandas as pd
    cells = [t.encode() for t in texts(40)]
    cells[0] = b"caf\xe9 latte"  # Latin-1
    path = tmp_path / "d.parquet"
    pd.DataFrame({"text": cells, "label": [i % 2 for i in range(40)]}).to_parquet(path)
    with pytest.raises(PostError, match=r"d\.parquet row 1: the 'text' cell is bytes that are not UTF-8"):
        load(path)


# ---------------------------------------------------------------- 3. duplicates

def test_duplicate_rows_of_one_file_are_dropped_before_it_is_split(tmp_path):
    path = write_rows(tmp_path / "d.csv", texts(40) * 2, labels=[i % 2 for i in range(40)] * 2)
    splits, notes = load_noted(path)
    assert sum(len(s) for s in splits.values()) == 40
    train = set(map(tuple, splits["train"].input_ids))
    assert not any(tuple(ids) in train for ids in splits["test"].input_ids + splits["validation"].input_ids)
    assert any("40 duplicate row(s)" in n and "dropped" in n for n in notes), notes


def test_a_file_without_duplicates_is_split_as_before(tmp_path):
    path = write_rows(tmp_path / "d.csv", texts(40))
    order = list(range(40))
    random.Random(0).shuffle(order)
    expected = {"train": order[:32], "validation": order[32:36], "test": order[36:]}
    for split, picked in expected.items():
        got = read_split(str(path), split)
        assert [r["text"] for r in got] == [texts(40)[i] for i in picked]
        assert not getattr(got, "notes", ())
    _, notes = load_noted(path)
    assert notes == []


def test_a_run_logs_the_notes_as_warnings(tmp_path):
    from engine import loading
    from engine.presets import load_config

    class Run:  # the two things loading.task reads of a run's context
        config = load_config("smoke", overrides=[f'task.source="{write_rows(tmp_path / "d.csv", texts(40) * 2)}"'])
        cache: dict = {}
        logged: list = []

        def once(self, key, make):
            return self.cache.setdefault(key, make())

        def log(self, message, level="info"):
            self.logged.append((level, message))

    run = Run()
    loading.task(run, build_tokenizer())
    assert [level for level, m in run.logged if "40 duplicate row(s)" in m] == ["warning"], run.logged


def test_one_text_under_two_labels_is_kept_and_counted(tmp_path):
    rows = texts(40) + [texts(40)[0], texts(40)[1]]
    labels = [i % 2 for i in range(40)] + [1, 0]  # the first two texts again, with the other label
    path = write_rows(tmp_path / "d.csv", rows, labels=labels)
    splits, notes = load_noted(path)
    assert sum(len(s) for s in splits.values()) == 42
    assert any("2 text(s) appear with different labels" in n for n in notes), notes


def test_separate_split_files_keep_their_rows_and_count_texts_also_in_train(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_rows(folder / "train.csv", texts(40))
    write_rows(folder / "validation.csv", texts(40)[:3] + ["a new text for validation", "another new one"])
    write_rows(folder / "test.csv", texts(40)[:5] + ["a new text for test"])
    splits, notes = load_noted(folder)
    assert (len(splits["train"]), len(splits["validation"]), len(splits["test"])) == (40, 5, 6)
    assert any("3 of 5 validation text(s) also appear in train" in n for n in notes), notes
    assert any("5 of 6 test text(s) also appear in train" in n for n in notes), notes


# ---------------------------------------------------------------- 4. max_length and the template

def test_a_template_that_fills_max_length_is_blamed_on_the_template(tmp_path):
    result = CliRunner().invoke(app, ["run", "--preset", "smoke", "--set", "task.max_length=4",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    error = result.stderr.strip().splitlines()
    assert len(error) == 1 and "task.template takes 4 tokens" in error[0] and "task.max_length = 4" in error[0]
    assert "cell is empty" not in result.output


def test_a_cut_text_keeps_its_row_for_messages(tmp_path):
    tokenizer = build_tokenizer()

    class Blank:  # a cut that decodes to blanks: the message must still name the row
        def __call__(self, *args, **kwargs):
            return tokenizer(*args, **kwargs)

        def decode(self, ids):
            return " "

    path = write_rows(tmp_path / "d.csv", texts(40, {0: "a rather long text " * 20}))
    cfg = TaskConfig(source=str(path), label_words=WORDS, max_length=20)
    with pytest.raises(PostError, match=r"d\.csv row 1: the 'text' cell is empty"):
        load_task(cfg, Blank(), 0, warn=lambda note: None)


def test_texts_mostly_cut_are_warned_about_once(tmp_path):
    path = write_rows(tmp_path / "d.csv", texts(40))
    _, notes = load_noted(path, max_length=8)
    cut = [n for n in notes if "texts are cut" in n]
    assert len(cut) == 1 and "40 of 40" in cut[0] and "task.max_length = 8" in cut[0], notes
    _, notes = load_noted(path, max_length=64)
    assert not [n for n in notes if "texts are cut" in n]


# ---------------------------------------------------------------- 5. messages that name the real cause

def test_column_names_are_shown_with_their_spaces(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text, label\n" + "".join(f"{t}, {i % 2}\n" for i, t in enumerate(texts(40))))
    with pytest.raises(PostError, match=r"no label column 'label'; columns are: 'text', ' label'"):
        load(path)


def test_json_lines_in_a_json_file_is_named(tmp_path):
    path = tmp_path / "d.json"
    path.write_text("".join(f'{{"text": "{t}", "label": {i % 2}}}\n' for i, t in enumerate(texts(10))))
    with pytest.raises(PostError, match=r"looks like JSON Lines .*rename it to d\.jsonl"):
        _read_file(path)


def test_a_repeated_header_row_is_named(tmp_path):
    path = tmp_path / "d.csv"
    write_rows(path, texts(20))
    path.write_text(path.read_text() + path.read_text())  # two files joined: the header again as row 21
    with pytest.raises(PostError, match=r"d\.csv row 21 repeats the header \(text, label\): remove that line"):
        load(path)


def test_labels_that_differ_only_in_case_are_named():
    rows = [{"label": "Spam"}, {"label": "spam"}, {"label": "ham"}]
    with pytest.raises(PostError, match=r"labels 'Spam' and 'spam' in column 'label' differ only in case"):
        _labels(rows, "label", 2, "d.csv")
    with pytest.raises(PostError, match=r"row 1: label 'Spam' differs from 'spam' of task.label_names only in case"):
        from engine.data.sources import Row
        row = Row({"label": "Spam"})
        row.origin = "d.csv row 1"
        _labels([row], "label", 2, "d.csv", ["ham", "spam"])


@pytest.mark.parametrize("sep,suffix", [(",", ".csv"), ("\t", ".tsv")])
def test_a_header_that_names_a_column_twice_is_refused(tmp_path, sep, suffix):
    """pandas renames the second "text" to "text.1": task.text_fields = ["text"] would read the first (ids)."""
    path = tmp_path / f"data{suffix}"
    path.write_text(f"text{sep}label{sep}text\n" + "".join(f"id{i}{sep}{i % 2}{sep}{t}\n" for i, t in enumerate(texts())))
    with pytest.raises(PostError, match="'text' more than once"):
        load(path)

"""The owner's side trains on public data only: a public set or distillation corpus holding the private
texts is refused before any stage (engine.privacy.boundary)."""
import shutil

import pytest
from typer.testing import CliRunner

from engine.privacy import boundary
from post_tui.cli import app

runner = CliRunner()


def reviews(path, n=400):
    path.write_text("text,label\n" + "".join(f"the film number {i} was really {'good' if i % 2 else 'bad'},{i % 2}\n"
                                            for i in range(n)))
    return path


def run(tmp_path, *sets):
    args = ["run", "--preset", "smoke", "--out", str(tmp_path / "run")]
    for s in sets:
        args += ["--set", s]
    return runner.invoke(app, args)


@pytest.mark.parametrize("sets, says", [
    # the private file named again as the public set, under DP: the transfer would read it without noise
    (['public.source="{private}"', 'public.split="train"', "privacy.epsilon=8"], "of the public set (public.source)"),
    # a copy of it, its test split: compared by text, not by name or split
    (['public.source="{copy}"', 'public.split="test"', "public.size=32"], "of the public set (public.source)"),
    (['distill.corpus="{copy}"', 'distill.corpus_split="validation"'], "of the distillation corpus (distill.corpus)"),
])
def test_the_private_data_as_owner_side_data_is_refused(tmp_path, sets, says):
    private = reviews(tmp_path / "mine.csv")
    shutil.copy(private, tmp_path / "copy.csv")
    filled = [s.format(private=private, copy=tmp_path / "copy.csv") for s in sets]
    result = run(tmp_path, f'task.source="{private}"', *filled)
    assert result.exit_code == 2 and says in result.output and "are texts of the private task data" in result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()  # refused before any stage: nothing written, no ε spent


def test_what_counts_as_shared():
    private = boundary._countable(["The film was a  delight from start to end", "ok", "short one here"])
    # case and spacing do not hide a text; texts under MIN_WORDS words count for neither side
    assert boundary.shared(["the film WAS a delight from start to end", "ok", "another text of five words"],
                           private) == (1, 2)


def test_a_few_shared_texts_are_said_and_more_are_refused():
    said = []
    private = boundary._countable([f"a private review number {i} here" for i in range(10)])
    public = [f"a public tweet number {i} here" for i in range(300)]
    boundary.check("the public set", "public.source", public + ["a private review number 3 here"], private,
                   lambda message, level: said.append((message, level)))
    assert said and said[0][1] == "warning" and said[0][0].startswith("1 of the 301 texts")
    said.clear()  # a small set: one shared text is chance too, a tenth of it is not
    boundary.check("the public set", "public.source", public[:56] + ["a private review number 3 here"], private,
                   lambda message, level: said.append((message, level)))
    assert said and said[0][0].startswith("1 of the 57 texts")
    with pytest.raises(Exception, match="6 of the 50 texts"):
        boundary.check("the public set", "public.source", public[:44] + [f"a private review number {i} here" for i in range(6)],
                       private, lambda *_: None)
    with pytest.raises(Exception, match="4 of the 304 texts"):
        boundary.check("the public set", "public.source", public + [f"a private review number {i} here" for i in range(4)],
                       private, lambda *_: None)


def test_tuning_alone_checks_what_the_owner_side_will_read(tmp_path):
    # post distill, then post tune: the transfer that follows never opens the private data, so tune checks
    private = reviews(tmp_path / "mine.csv")
    sets = ["--set", f'task.source="{private}"', "--set", f'public.source="{private}"', "--set", 'public.split="test"',
            "--set", "public.size=32"]
    assert runner.invoke(app, ["distill", "--preset", "smoke", "--out", str(tmp_path / "r"), *sets]).exit_code == 0
    result = runner.invoke(app, ["tune", str(tmp_path / "r"), *sets])
    assert result.exit_code == 2 and "of the public set (public.source)" in result.stderr
    assert not (tmp_path / "r" / "tune" / "done.json").exists()


def test_a_private_column_the_task_does_not_read_is_private_too(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("title,text,label\n" + "".join(f"the secret title of review {i},a review {i},{i % 2}\n"
                                                   for i in range(100)))
    from engine.config import TaskConfig
    private = boundary.private_texts(TaskConfig(source=str(path), label_words=[["bad"], ["good"]]), 0)
    assert boundary.shared([f"the secret title of review {i}" for i in range(20)], private) == (20, 20)


def test_a_transfer_alone_trains_only_on_a_public_set_a_tuning_run_compared(tmp_path):
    # `post transfer` never opens the private data: a public set changed by --set after the tune was unchecked
    private = reviews(tmp_path / "mine.csv")
    shutil.copy(private, tmp_path / "copy.csv")
    (tmp_path / "tweets.csv").write_text("text\n" + "".join(f"a public tweet number {i} about nothing much\n"
                                                             for i in range(100)))
    r = str(tmp_path / "r")
    mine = ["--set", f'task.source="{private}"']
    assert runner.invoke(app, ["distill", "--preset", "smoke", "--out", r, *mine]).exit_code == 0
    assert runner.invoke(app, ["tune", r, *mine]).exit_code == 0

    copy = [*mine, "--set", f'public.source="{tmp_path / "copy.csv"}"', "--set", 'public.split="train"']
    result = runner.invoke(app, ["transfer", r, *copy])
    assert result.exit_code == 2 and "has not been compared with this run's private data" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "r" / "transfer").exists()
    result = runner.invoke(app, ["run", "--resume", r, *copy])  # the remedy the refusal names: it finds the copy
    assert result.exit_code == 2 and "are texts of the private task data" in result.stderr

    tweets = [*mine, "--set", f'public.source="{tmp_path / "tweets.csv"}"', "--set", 'public.split="train"']
    assert runner.invoke(app, ["transfer", r, *tweets]).exit_code == 2  # not compared yet
    tuned = (tmp_path / "r" / "tune" / "prompt.safetensors").read_bytes()
    result = runner.invoke(app, ["run", "--resume", r, *tweets])  # compares it, keeps the tune, transfers
    assert result.exit_code == 0, result.output
    # not tuned again: the file is not rewritten, so its bytes are the very same
    assert (tmp_path / "r" / "tune" / "prompt.safetensors").read_bytes() == tuned
    assert runner.invoke(app, ["transfer", r, *tweets]).exit_code == 0  # compared now
    assert runner.invoke(app, ["transfer", r, *mine]).exit_code == 0  # the smoke set the first tune compared
    assert runner.invoke(app, ["transfer", r, *mine, "--set", "public.size=32"]).exit_code == 0  # a part of it


def test_the_record_of_what_was_compared_gives_the_verdict_the_private_data_would(tmp_path):
    said = []
    log = lambda message, level: said.append(message)  # noqa: E731
    private = boundary._countable(["a private text of five words", "one more private text of five words"])
    public = [f"a public tweet number {i} here" for i in range(40)] + ["A private text  of five words"]
    boundary.keep_compared(tmp_path, public, "mine", private)
    assert boundary.check_compared(tmp_path, public[::-1], "mine", log)  # any order
    assert said and said[0].startswith("1 of the 41 texts")  # the warning a comparison gives
    assert boundary.check_compared(tmp_path, public[:20], "mine", log)  # a subset: another public.size or pick
    with pytest.raises(Exception, match="1 of the 6 texts"):  # a subset where the shared text weighs more
        boundary.check_compared(tmp_path, public[-6:], "mine", log)
    assert not boundary.check_compared(tmp_path, public + ["a text never compared with it"], "mine", log)
    assert not boundary.check_compared(tmp_path, public[:20], "theirs", log)  # compared with other private data
    # the private file edited in place: what was compared with its old texts no longer counts
    boundary.keep_compared(tmp_path, ["a corpus text"], "mine", private | {"0123456789abcdef"})
    assert not boundary.check_compared(tmp_path, public[:20], "mine", log)
    for damaged in ('{"public@mine": "abc"}', '["public@mine"]'):  # a list too: the same words, with the fix
        (tmp_path / boundary.CHECKED).write_text(damaged)
        with pytest.raises(Exception, match="is not a record of the public data compared.*delete it"):
            boundary.check_compared(tmp_path, ["another"], "mine", log)


def test_a_transfer_alone_cannot_pass_as_the_owners_nor_reuse_a_set_compared_with_other_private_data(tmp_path):
    private, other = reviews(tmp_path / "mine.csv"), tmp_path / "other.csv"
    other.write_text("text,label\n" + "".join(f"another private note {i} that is quite fine,{i % 2}\n" for i in range(300)))
    r = str(tmp_path / "r")
    public = lambda p: ["--set", f'public.source="{p}"', "--set", 'public.split="train"']  # noqa: E731
    mine, theirs = ["--set", f'task.source="{private}"'], ["--set", f'task.source="{other}"']
    assert runner.invoke(app, ["run", "--preset", "smoke", "--out", r, *mine, *public(other)]).exit_code == 0
    # the user's own folder is not the owner's by a --set, nor once the note tune wrote there is deleted
    result = runner.invoke(app, ["transfer", r, "--set", 'task.source="withheld"', *public(private)])
    assert result.exit_code == 2 and "is a user's run folder" in result.stderr
    (tmp_path / "r" / "PRIVATE.txt").unlink()
    result = runner.invoke(app, ["transfer", r, "--set", 'task.source="withheld"', *public(private)])
    assert result.exit_code == 2 and "is a user's run folder" in result.stderr, result.output
    # other.csv passed against mine.csv; tuned on other.csv since, it is that run's private data
    smoke = ["--set", 'public.source="smoke"', "--set", 'public.split="corpus"']
    assert runner.invoke(app, ["tune", r, *theirs, *smoke]).exit_code == 0
    result = runner.invoke(app, ["transfer", r, *theirs, *public(other)])
    assert result.exit_code == 2 and "has not been compared" in result.stderr


def test_a_private_file_edited_voids_what_was_compared_even_when_the_tune_compares_nothing(tmp_path):
    # tuned again on the edited file with a public set it cannot read (or a generated one): the comparison
    # with the old texts must not vouch for a transfer alone on a set the private data now holds
    private = reviews(tmp_path / "mine.csv")
    tweets = [f"a public tweet number {i} about nothing much" for i in range(100)]
    (tmp_path / "tweets.csv").write_text("text\n" + "".join(t + "\n" for t in tweets))
    r = str(tmp_path / "r")
    mine = ["--set", f'task.source="{private}"']
    public = lambda p: [*mine, "--set", f'public.source="{p}"', "--set", 'public.split="train"']  # noqa: E731
    assert runner.invoke(app, ["distill", "--preset", "smoke", "--out", r, *mine]).exit_code == 0
    assert runner.invoke(app, ["tune", r, *public(tmp_path / "tweets.csv")]).exit_code == 0
    with private.open("a") as handle:  # the tweets are private texts now
        handle.write("".join(f"{t},{i % 2}\n" for i, t in enumerate(tweets)))
    result = runner.invoke(app, ["tune", r, *public(tmp_path / "gone.csv")])  # tunes on the edited file
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["transfer", r, *public(tmp_path / "tweets.csv")])
    assert result.exit_code == 2 and "has not been compared" in result.stderr, result.output

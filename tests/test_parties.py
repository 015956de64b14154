"""The privacy boundary: kit → user tune → package → owner transfer → user eval; tampering; the ledger."""
import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.data.smoke import make_rows
from post_tui.cli import app

runner = CliRunner()
FAST = ["distill.steps=10", "tune.steps=12", "transfer.steps=10", "tune.eval_every=6", "eval.full_pt=false"]
LABELS = ["gloomy-review", "sunny-review"]  # string labels: they must never reach the owner


def sets(*extra):
    return [a for s in (*FAST, *extra) for a in ("--set", s)]


def write_private(folder: Path) -> Path:
    path = folder / "private-reviews-of-alice.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for row in make_rows(300, seed=7):
            writer.writerow([row["text"], LABELS[row["label"]]])
    return path


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    """The whole two-party flow, each side in its own folder."""
    import os
    root = tmp_path_factory.mktemp("parties")
    os.environ["POST_CACHE"] = str(root / "cache")
    os.environ["POST_LEDGER"] = str(root / "ledger")
    data = write_private(root)
    user_sets = sets(f'task.source="{data}"', f'task.label_names={json.dumps(LABELS)}', "privacy.epsilon=8")
    invoke("kit", "build", "--preset", "smoke", *sets(), "--out", root / "KIT")
    invoke("tune", "--preset", "smoke", *user_sets, "--set", f'models.kit="{root / "KIT"}"', "--out", root / "user")
    invoke("package", root / "user", "--out", root / "PKG")
    hidden = data.with_suffix(".away")
    data.rename(hidden)  # the owner's transfer runs with the private data gone from where the config says
    try:
        invoke("transfer", "--kit", root / "KIT", "--package", root / "PKG", "--out", root / "owner",
               "--preset", "smoke", *sets())
    finally:
        hidden.rename(data)
    invoke("eval", root / "user", "--from", root / "owner")
    return root, data


def test_owner_side_holds_nothing_private(flow):
    root, data = flow
    user = root / "user"
    secrets = {str(data), data.name, data.stem, *LABELS}
    tune_events = [json.loads(line) for line in (user / "events.jsonl").read_text().splitlines()]
    # the user's private numbers: tune losses and validation accuracies, test accuracies
    numbers = {repr(e["value"]) for e in tune_events if e["event"] == "Metric" and e["stage"] == "tune"}
    numbers |= {repr(v) for v in json.loads((user / "results.json").read_text())["accuracy"].values()}
    numbers = {n for n in numbers if len(n) >= 6}  # '0.5' would match any number; 0.515625 or a loss would not
    rows = [r["text"] for r in make_rows(300, seed=7)[:50]]
    for folder in (root / "PKG", root / "owner"):
        for path in folder.rglob("*"):
            if not path.is_file():
                continue
            text = path.read_bytes().decode("utf-8", errors="replace")
            for secret in secrets | numbers:
                assert secret not in text, f"{secret!r} found in {path}"
            for row in rows:
                assert row not in text, f"private text in {path}"
    assert sorted(p.name for p in (root / "PKG").iterdir()) == ["manifest.json", "privacy.json", "prompt.safetensors",
                                                                "task_card.json"]
    assert "withheld" in (root / "owner" / "config.toml").read_text()
    assert "NOT noised" in (user / "PRIVATE.txt").read_text() and not (root / "owner" / "PRIVATE.txt").exists()


def test_user_scores_the_owners_prompts(flow):
    root, _ = flow
    results = json.loads((root / "user" / "results.json").read_text())
    assert {"post", "direct", "cpt", "full_zs"} <= results["accuracy"].keys()
    assert results["privacy"]["epsilon"] <= 8.0


def test_the_owner_exports_the_transferred_prompt_with_the_users_epsilon(flow, tmp_path):
    """post export in the owner's folder: the PEFT adapter says ε from the certificate in the package received
    (the owner has no tune stage), and nothing private is in it."""
    root, data = flow
    hidden = data.with_suffix(".away")
    data.rename(hidden)  # the owner's export, like its transfer, runs without the private data
    try:
        invoke("export", root / "owner", "--out", tmp_path / "adapter")
        direct = runner.invoke(app, ["export", str(root / "owner"), "--method", "direct", "--out", str(tmp_path / "direct")])
    finally:
        hidden.rename(data)
    assert direct.exit_code == 0, direct.output  # Direct in the owner's folder: the user's prompt as received
    assert json.loads((tmp_path / "direct" / "post_export.json").read_text())["prompt"] == "package/prompt.safetensors"
    info = json.loads((tmp_path / "adapter" / "post_export.json").read_text())
    certificate = json.loads((root / "PKG" / "privacy.json").read_text())
    assert info["privacy"]["private"] is True and info["privacy"]["certificate"] == "package/privacy.json"
    assert info["privacy"]["epsilon"] == certificate["epsilon"] <= 8.0
    for path in (tmp_path / "adapter").iterdir():
        text = path.read_bytes().decode("utf-8", errors="replace")
        assert not any(secret in text for secret in (str(data), data.name, *LABELS, str(root))), path


@pytest.mark.parametrize("damage", ["prompt", "manifest", "manifest_epsilon", "manifest_not_dp", "torn_manifest",
                                    "truncated", "extra", "wrong_kit", "no_package", "card_length", "prompt_nan",
                                    "prompt_width", "card_labels"])
def test_tampered_package_or_wrong_kit_is_refused(flow, tmp_path, damage):
    root, _ = flow
    pkg = tmp_path / "PKG"
    shutil.copytree(root / "PKG", pkg)
    kit = root / "KIT"
    if damage == "prompt":
        raw = bytearray((pkg / "prompt.safetensors").read_bytes())
        raw[-1] ^= 1
        (pkg / "prompt.safetensors").write_bytes(bytes(raw))
    elif damage == "manifest":
        manifest = json.loads((pkg / "manifest.json").read_text())
        manifest["epsilon"] = 0.1
        manifest["files"]["privacy.json"]["sha256"] = "0" * 64
        (pkg / "manifest.json").write_text(json.dumps(manifest))
    elif damage in ("manifest_epsilon", "manifest_not_dp"):  # every file as made: only the headline is edited
        manifest = json.loads((pkg / "manifest.json").read_text())
        manifest.update(epsilon=0.01) if damage == "manifest_epsilon" else manifest.update(dp=False, epsilon=None)
        (pkg / "manifest.json").write_text(json.dumps(manifest))
        inspected = runner.invoke(app, ["package", "inspect", str(pkg)])
        assert inspected.exit_code == 2 and "the package was edited" in inspected.stderr, inspected.output
    elif damage in ("card_length", "card_labels", "prompt_nan", "prompt_width"):  # edited, the manifest's sha256 made again
        import hashlib
        import torch
        from safetensors.torch import load_file, save_file
        if damage.startswith("card_"):
            card = json.loads((pkg / "task_card.json").read_text())
            if damage == "card_length":
                card["prompt_length"] *= 2  # the owner's large prompt would be this long, not the tuned one's length
            else:
                card["label_words"] = "good"  # not a list of classes: the card's fault, not the owner's config's
            (pkg / "task_card.json").write_text(json.dumps(card))
        else:
            prompt = load_file(str(pkg / "prompt.safetensors"))["prompt"]
            prompt = prompt.clone().fill_(float("nan")) if damage == "prompt_nan" else torch.zeros(len(prompt), 3)
            save_file({"prompt": prompt}, str(pkg / "prompt.safetensors"))
        manifest = json.loads((pkg / "manifest.json").read_text())
        for name, entry in manifest["files"].items():
            entry.update(sha256=hashlib.sha256((pkg / name).read_bytes()).hexdigest(), bytes=(pkg / name).stat().st_size)
        (pkg / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "torn_manifest":
        (pkg / "manifest.json").write_text('{"kind": "post-pro')
    elif damage == "truncated":
        (pkg / "task_card.json").unlink()
    elif damage == "extra":
        (pkg / "losses.json").write_text("[0.7, 0.6]")
    else:
        kit = tmp_path / "KIT"
        shutil.copytree(root / "KIT", kit)
        manifest = json.loads((kit / "manifest.json").read_text())
        weights = kit / "student" / "model.safetensors"
        raw = bytearray(weights.read_bytes())
        raw[-1] ^= 1
        weights.write_bytes(bytes(raw))
        manifest["files"]["student/model.safetensors"]["sha256"] = __import__("hashlib").sha256(raw).hexdigest()
        (kit / "manifest.json").write_text(json.dumps(manifest))  # a consistent kit, but another one
    given = ["--package", str(pkg)] if damage != "no_package" else []
    result = runner.invoke(app, ["transfer", "--kit", str(kit), *given, "--out", str(tmp_path / "o"), "--preset", "smoke"])
    assert result.exit_code == 2, result.output
    needle = {"torn_manifest": "ask whoever sent it for the prompt package again", "no_package": "--package missing",
              "card_length": "prompt_length", "prompt_nan": "inf or nan", "prompt_width": "3 wide",
              "card_labels": "task_card.json does not hold a valid task"}
    assert needle.get(damage, "") in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_the_user_does_not_import_prompts_of_another_large_model(flow, tmp_path):
    """The owner's prompts are scored on the user's models.large: prompts trained on another model are refused
    before anything is copied."""
    from tests.helpers import saved_tiny
    root, _ = flow
    user = tmp_path / "user"
    shutil.copytree(root / "user", user)
    shutil.rmtree(user / "transfer")
    saved_tiny("gpt2", tmp_path / "other", seed=3)
    result = runner.invoke(app, ["eval", str(user), "--from", str(root / "owner"),
                                 "--set", f'models.large="{tmp_path / "other"}"'])
    assert result.exit_code == 2 and "nothing was imported" in result.stderr, result.output
    assert not (user / "transfer").exists()


def test_one_machine_run_goes_through_the_same_kit_and_package(flow, tmp_path):
    """`post run` distils into a kit (the cached student is one) and tunes into a package: the kit
    `post kit build` hands out is that very artifact, and the owner accepts the one-machine package.
    With transfer.alpha = "auto" the user side chooses α (validation accuracies stay in tune/alpha.json)
    and only α travels, in the package's choice.json, which the owner's transfer then uses."""
    root, _ = flow
    run = tmp_path / "one"
    invoke("run", "--preset", "smoke", *sets('transfer.alpha="auto"'), "--out", run)
    record = json.loads((run / "distill" / "student.json").read_text())
    from engine import kit, manifest
    assert kit.fingerprint_of(Path(record["kit"])) == kit.fingerprint_of(root / "KIT")
    found = manifest.verify(run / "package", "post-prompt-package")
    assert found["kit"] == kit.fingerprint_of(root / "KIT") and "choice.json" in found["files"]
    choice = json.loads((run / "package" / "choice.json").read_text())
    private = json.loads((run / "tune" / "alpha.json").read_text())
    assert set(choice) == {"alpha", "rule"} and choice["alpha"] == private["alpha"] and "cpt_validation" in private
    assert json.loads((run / "transfer" / "post.json").read_text())["alpha"] == choice["alpha"]
    invoke("package", run, "--out", tmp_path / "PKG")
    invoke("transfer", "--kit", root / "KIT", "--package", tmp_path / "PKG", "--out", tmp_path / "owner",
           "--preset", "smoke", *sets('transfer.alpha="auto"'))
    assert json.loads((tmp_path / "owner" / "transfer" / "post.json").read_text())["alpha"] == choice["alpha"]
    assert "validation" not in (tmp_path / "owner" / "package" / "choice.json").read_text()
    # a choice.json edited with a consistent manifest is still checked for what the transfer will use
    import hashlib
    bad = tmp_path / "BAD"
    shutil.copytree(tmp_path / "PKG", bad)
    (bad / "choice.json").write_text('{"alpha": 7, "rule": "auto"}')
    found = json.loads((bad / "manifest.json").read_text())
    found["files"]["choice.json"]["sha256"] = hashlib.sha256((bad / "choice.json").read_bytes()).hexdigest()
    (bad / "manifest.json").write_text(json.dumps(found))
    result = runner.invoke(app, ["package", "inspect", str(bad)])
    assert result.exit_code == 2 and "alpha in [0, 1]" in result.output and "Traceback" not in result.output


def test_owner_refuses_auto_without_the_users_choice_and_a_dp_package_with_one(flow, tmp_path):
    root, _ = flow
    result = runner.invoke(app, ["transfer", "--kit", str(root / "KIT"), "--package", str(root / "PKG"), "--out",
                                 str(tmp_path / "o"), "--preset", "smoke", "--set", 'transfer.alpha="auto"'])
    assert result.exit_code == 2 and "carries no choice" in result.output, result.output
    from engine import package
    from engine.errors import PostError
    pkg = tmp_path / "PKG"
    shutil.copytree(root / "PKG", pkg)
    with pytest.raises(PostError, match="not covered by ε"):
        package.add_choice(pkg, {"alpha": 0.3, "rule": "auto"})


@pytest.mark.parametrize("damage, needle", [
    ("prompt", "does not match the recorded sha256"),     # another prompt beside the old certificate
    ("epsilon", "does not match the recorded sha256"),    # a certificate edited to claim less
    ("no certificate", "is missing"),                     # a DP prompt packaged as if it were not
])
def test_package_refuses_a_tune_folder_changed_after_the_tune(flow, tmp_path, damage, needle):
    import safetensors.torch as st
    root, _ = flow
    user = tmp_path / "user"
    shutil.copytree(root / "user", user)
    tune = user / "tune"
    if damage == "prompt":
        tensors = st.load_file(tune / "prompt.safetensors")
        st.save_file({k: v + 1 for k, v in tensors.items()}, tune / "prompt.safetensors")
    elif damage == "epsilon":
        cert = json.loads((tune / "privacy.json").read_text())
        (tune / "privacy.json").write_text(json.dumps({**cert, "epsilon": 1.0}))
    else:
        (tune / "privacy.json").unlink()
    result = runner.invoke(app, ["package", str(user), "--out", str(tmp_path / "PKG")])
    assert result.exit_code == 2 and needle in result.stderr and "tune again" in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "PKG").exists()


def test_an_import_that_eval_would_refuse_copies_nothing(flow, tmp_path):
    root, _ = flow
    user = tmp_path / "user"
    shutil.copytree(root / "user", user)
    shutil.rmtree(user / "transfer")
    result = runner.invoke(app, ["eval", str(user), "--from", str(root / "owner"), "--set", "eval.full_pt=true"])
    assert result.exit_code == 2 and "the full_pt stage in" in result.stderr, result.output
    assert "nothing was imported" in result.stderr and not (user / "transfer").exists()


def untransferred_copies(flow, tmp_path) -> tuple[Path, Path]:
    """Copies of the flow's user folder (its transfer removed: the import's to make) and owner folder."""
    root, _ = flow
    user, owner = tmp_path / "user", tmp_path / "owner"
    shutil.copytree(root / "user", user)
    shutil.copytree(root / "owner", owner)
    shutil.rmtree(user / "transfer")
    return user, owner


def test_an_owners_transfer_edited_since_its_record_is_not_imported(flow, tmp_path):
    user, owner = untransferred_copies(flow, tmp_path)
    prompt = owner / "transfer" / "post.safetensors"
    prompt.write_bytes(prompt.read_bytes()[:-4] + b"\x00\x00\x00\x00")  # damaged or edited after the transfer
    result = runner.invoke(app, ["eval", str(user), "--from", str(owner)])
    assert result.exit_code == 2 and f"{owner}'s transfer is not what its record says" in result.stderr, result.output
    assert "nothing was imported" in result.stderr and not (user / "transfer").exists()


def test_an_owners_record_with_a_damaged_list_of_files_is_not_imported(flow, tmp_path):
    user, owner = untransferred_copies(flow, tmp_path)
    done = owner / "transfer" / "done.json"
    record = json.loads(done.read_text())
    done.write_text(json.dumps({**record, "artifacts": {"post": "post.safetensors"}}))  # an entry without its sha256
    result = runner.invoke(app, ["eval", str(user), "--from", str(owner)])
    assert result.exit_code == 2 and "has no finished transfer" in result.stderr, result.output
    assert not (user / "transfer").exists()


def test_an_import_copies_only_the_files_the_owners_record_lists(flow, tmp_path):
    user, owner = untransferred_copies(flow, tmp_path)
    # left by an earlier transfer of the owner's (other methods or settings): no record vouches for it
    shutil.copy(owner / "transfer" / "post.safetensors", owner / "transfer" / "stale.safetensors")
    # and one of the user's own, from a transfer run here before: eval would score it as the owner's
    (user / "transfer").mkdir()
    shutil.copy(owner / "transfer" / "post.safetensors", user / "transfer" / "mine.safetensors")
    invoke("eval", user, "--from", owner)
    listed = {Path(e["path"]).name for e in json.loads((owner / "transfer" / "done.json").read_text())["artifacts"].values()}
    assert {p.name for p in (user / "transfer").iterdir()} == listed | {"done.json"}


def test_the_owners_transfer_is_refused_into_a_users_folder(flow, tmp_path):
    root, _ = flow
    user = tmp_path / "user"
    shutil.copytree(root / "user", user)
    tuned = (user / "tune" / "done.json").read_bytes()
    for note in (True, False):  # by the note tune writes, and by the tune record once the note is deleted
        if not note:
            (user / "PRIVATE.txt").unlink()
        result = runner.invoke(app, ["transfer", "--kit", str(root / "KIT"), "--package", str(root / "PKG"),
                                     "--out", str(user), "--preset", "smoke", *sets()])
        assert result.exit_code == 2 and "is a user's run folder" in result.stderr, result.output
        # the user's tune record as it was: not rewritten, so its very bytes (no trained float recomputed)
        assert (user / "tune" / "done.json").read_bytes() == tuned


def test_privacy_verify_reads_a_package(flow):
    root, _ = flow
    assert invoke("privacy", "verify", root / "PKG").stdout.startswith(f"OK {root / 'PKG' / 'privacy.json'}")


def test_package_inspect_lists_every_field(flow):
    root, _ = flow
    out = invoke("package", "inspect", root / "PKG").stdout
    assert "differentially private" in out and "privacy.history" in out and "task_card.label_words" in out


# ---------------------------------------------------------------- the ledger

def test_three_dp_tunes_compose_budget_refuses_and_new_data_is_new_entry(tmp_path, monkeypatch):
    from engine.privacy import epsilon
    from engine.privacy.ledger import composed, entries, root as ledger_root
    monkeypatch.setenv("POST_CACHE", str(tmp_path / "cache"))
    data = write_private(tmp_path)
    task = [f'task.source="{data}"', f'task.label_names={json.dumps(LABELS)}', "tune.steps=8"]
    runs = [tmp_path / f"run{i}" for i in range(3)]
    invoke("run", "--preset", "smoke", *sets(*task), "--out", runs[0])  # non-DP: ε = ∞ for this data
    [key] = [p.name for p in ledger_root().iterdir()]
    assert composed(key)["epsilon"] == float("inf")
    for entry in (ledger_root() / key).iterdir():
        entry.unlink()  # start the DP part of the story from a clean ledger
    for i, sigma in enumerate((1.0, 1.2, 0.9)):
        shown = invoke("tune", runs[0], *sets(*task, f"privacy.noise_multiplier={sigma}")).stdout
        assert (f"over {i + 1} releases" in shown) == (i > 0)  # what the data has spent, as it is spent
    events = [json.loads(line) for line in (runs[0] / "events.jsonl").read_text().splitlines()]
    last = [e for e in events if e["event"] == "PrivacySpent"][-1]
    found = entries(key)
    assert last["ledger_releases"] == 3 and last["ledger_epsilon"] == pytest.approx(composed(key)["epsilon"])
    assert len(found) == 3 and all(e["private"] and e["steps"] == 8 for e in found)
    history = [h for e in found for h in e["history"]]
    total = composed(key)
    assert total["epsilon"] == pytest.approx(epsilon(history, found[0]["delta"], "rdp"))
    listing = invoke("privacy", "ledger", key[:10]).stdout
    assert f"composed epsilon = {total['epsilon']:.3f}" in listing
    assert sum(1 for line in listing.splitlines() if line.startswith("  ") and " DP " in line) == 3
    # a budget one more run would exceed: refused before any step
    from engine.artifacts import sha256_file
    before = sha256_file(runs[0] / "tune" / "prompt.safetensors")  # the file must stay untouched
    result = runner.invoke(app, ["tune", str(runs[0]), *sets(*task, "privacy.noise_multiplier=1.0",
                                                               f"privacy.budget={total['epsilon'] + 0.01}")])
    assert result.exit_code == 2 and "privacy.budget" in result.stderr
    assert len(entries(key)) == 3 and sha256_file(runs[0] / "tune" / "prompt.safetensors") == before
    # one byte of the data changed: another data set, another entry — composed with the first, whose
    # other rows it shares
    data.write_text(data.read_text().replace("the movie", "the movie!", 1))
    refused = runner.invoke(app, ["tune", str(runs[0]), *sets(*task, "privacy.noise_multiplier=1.0")])
    assert refused.exit_code == 2 and "sharing rows with it" in refused.stderr  # the folder keeps its budget
    invoke("tune", runs[0], *sets(*task, "privacy.noise_multiplier=1.0", "privacy.budget=100"))
    keys = [p.name for p in ledger_root().iterdir() if p.is_dir()]
    assert len(keys) == 2
    [new] = [k for k in keys if k != key]
    assert composed(new)["releases"] == 4 and composed(new)["data_sets"] == 2
    assert composed(new)["epsilon"] > total["epsilon"]
    assert "composed with 1 data set(s) sharing rows" in invoke("privacy", "ledger", new[:10]).stdout


@pytest.mark.parametrize("change", ["seed", "order"])
def test_another_split_of_the_same_file_composes_with_it(tmp_path, monkeypatch, change):
    """Another seed carves another training split from one file; a shuffled file is carved differently too.
    Most rows are in both splits, so the budget counts the first run's ε against the second."""
    import random
    from engine.privacy.ledger import composed, root as ledger_root
    monkeypatch.setenv("POST_CACHE", str(tmp_path / "cache"))
    data = write_private(tmp_path)
    task = [f'task.source="{data}"', f'task.label_names={json.dumps(LABELS)}', "tune.steps=8",
            "privacy.noise_multiplier=1.0"]
    invoke("run", "--preset", "smoke", *sets(*task), "--out", tmp_path / "first")
    [first] = [p.name for p in ledger_root().iterdir() if p.is_dir()]
    spent = composed(first)["epsilon"]
    if change == "order":
        header, *rows = data.read_text().splitlines()
        random.Random(1).shuffle(rows)
        data.write_text("\n".join([header, *rows]) + "\n")
        again = task
    else:
        again = [*task, "runtime.seed=1"]
    budget = spent + 0.1 * spent  # one more run alone fits it; the two together do not
    result = runner.invoke(app, ["run", "--preset", "smoke", *sets(*again, f"privacy.budget={budget}"),
                                 "--out", str(tmp_path / "second")])
    assert result.exit_code == 2 and "sharing rows with it" in result.stderr, result.output
    invoke("run", "--preset", "smoke", *sets(*again), "--out", tmp_path / "third")
    keys = [p.name for p in ledger_root().iterdir() if p.is_dir()]
    assert len(keys) == 2  # another training split: another data set, linked to the first
    [second] = [k for k in keys if k != first]
    assert composed(second)["releases"] == 2 and composed(second)["epsilon"] > spent


def test_data_sets_without_shared_rows_do_not_compose(tmp_path, monkeypatch):
    from engine.privacy import ledger
    rows = [{"text": f"t{i}", "label": i % 2} for i in range(10)]
    for name, part in (("a", rows[:5]), ("b", rows[5:]), ("c", rows[4:6])):
        key = ledger.data_key(part, ["text", "label"])
        (ledger.root() / key).mkdir(parents=True)
        (ledger.root() / key / ledger.ROWS).write_text(
            "".join(f + "\n" for f in ledger.row_fingerprints(part, ["text", "label"])))
    a, b, c = (ledger.data_key(p, ["text", "label"]) for p in (rows[:5], rows[5:], rows[4:6]))
    assert ledger.linked(a) == [a, c] and ledger.linked(b) == [b, c] and sorted(ledger.linked(c)[1:]) == sorted([a, b])
    (ledger.root() / a / ledger.ROWS).write_text("not a fingerprint\n")
    ledger._read.clear()
    with pytest.raises(Exception, match="restore it from a backup"):
        ledger.linked(a)


def test_an_auto_choice_is_made_again_for_another_large_model(tmp_path, monkeypatch):
    monkeypatch.setenv("POST_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    invoke("run", "--preset", "smoke", *sets('transfer.alpha="auto"'), "--out", run)
    first = json.loads((run / "tune" / "alpha.json").read_text())
    resumed = invoke("run", "--resume", run, "--preset", "smoke", *sets('transfer.alpha="auto"', 'eval.batch_size=16'))
    assert "tune: already done" in resumed.output  # the prompt is kept; only the choice is stale
    again = json.loads((run / "tune" / "alpha.json").read_text())
    assert again["inputs"] != first["inputs"]  # chosen anew on the user's side, with the new settings
    assert json.loads((run / "package" / "choice.json").read_text())["alpha"] == again["alpha"]
    from engine import manifest
    assert "choice.json" in manifest.verify(run / "package", "post-prompt-package")["files"]


def test_the_user_audits_their_recipe_and_the_owner_cannot(flow):
    """The audit reads the private training data: it runs in the user's folder (with the kit's student and the
    DP recipe of the package's certificate), and the owner's folder refuses it in one line."""
    root, _ = flow
    invoke("audit", root / "user", "--set", "audit.pool=48", "--set", "audit.shadows=6")
    report = json.loads((root / "user" / "audit" / "audit.json").read_text())
    assert report["released"]["dp"] and report["shadow_dp"]["epsilon"][0] <= 8.0 + 1e-9
    refused = runner.invoke(app, ["audit", str(root / "owner")])
    assert refused.exit_code == 2 and "model owner's folder" in refused.output and "Traceback" not in refused.output
    assert not (root / "owner" / "audit").exists()
    assert not (root / "PKG" / "audit.json").exists() and "audit" not in (root / "PKG" / "manifest.json").read_text()


def test_an_imported_transfer_is_the_owners_and_eval_alone_goes_on_from_it(flow, tmp_path):
    # its record holds the owner's settings, not this run's config: a later `post eval` checks its files
    root, _ = flow
    user = tmp_path / "user"
    shutil.copytree(root / "user", user)
    record = json.loads((user / "transfer" / "done.json").read_text())
    assert record["imported_from"] == str((root / "owner").resolve())
    invoke("eval", user, "--set", "transfer.steps=99", "--set", 'public.source="tweets"')
    (user / "transfer" / "post.safetensors").write_bytes(b"edited")
    result = runner.invoke(app, ["eval", str(user)])
    assert result.exit_code == 2 and "does not match the recorded sha256" in result.stderr

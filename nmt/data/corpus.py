"""Parallel corpora on disk: the ``--data DIR`` layout, read and checked.

A corpus folder holds line-aligned plain UTF-8 text, one sentence per line::

    train.{src} train.{tgt}   valid.{src} valid.{tgt}   test.{src} test.{tgt}

Lines are split on ``\\n`` only (a trailing ``\\r`` is dropped). ``str.splitlines()`` is never used:
it also splits on U+0085, U+2028 and other characters that occur inside sentences of real WMT data, and
would silently misalign the two sides.

Every problem with the files raises ``DataError`` with a one-line message naming the file (and line);
the command-line entry points print it without a traceback. What ``--data`` names (a folder, the toy
corpus, a benchmark) is turned into a ``Corpus`` by ``nmt.data.catalog.resolve_corpus``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from nmt import atomic
from nmt.data.protocol import Protocol, default_protocol

SPLITS = ("train", "valid", "test")


class DataError(Exception):
    """Bad or missing input data. The message names the file (and line) or the flag."""


def data_root() -> Path:
    """Where downloads, generated corpora and caches live: ``$NMT_DATA_ROOT`` or ``./data``."""
    return Path(os.environ.get("NMT_DATA_ROOT", "data"))


def read_lines(path: Path, max_line_bytes: int = 1 << 20) -> list[str]:
    """The lines of a UTF-8 text file, split on ``\\n`` only, without line terminators."""
    lines: list[str] = []
    for first, raw in iter_line_chunks(path, max_line_bytes=max_line_bytes):
        lines.extend(decode_chunk(path, first, raw, max_line_bytes))
    return lines


def iter_line_chunks(
    path: Path, chunk_bytes: int = 4 << 20, max_line_bytes: int = 1 << 20
) -> Iterator[tuple[int, bytes]]:
    """Stream a file as ``(number of its first line, raw bytes)`` chunks that end on a line boundary.

    Memory stays bounded by ``chunk_bytes`` plus one line, whatever the file's size; a line longer
    than ``max_line_bytes`` characters raises ``DataError`` naming file and line without reading the rest
    of it. The chunks are decoded with ``decode_chunk`` (possibly in other processes).
    """
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    line = 1
    carry = b""
    with f:
        while True:
            try:
                block = f.read(chunk_bytes)
            except OSError as e:
                raise DataError(f"{path}: cannot read ({e.strerror})") from None
            if line == 1 and not carry and block.startswith(b"\xef\xbb\xbf"):
                block = block[3:]  # a UTF-8 byte-order mark
            if not block:
                if carry:
                    yield line, carry
                return
            end = block.rfind(b"\n")
            if end < 0:
                carry += block
                if len(carry) > 4 * max_line_bytes:  # UTF-8 characters take at most 4 bytes
                    raise DataError(
                        f"{path}:{line}: line of more than {max_line_bytes:,} characters; "
                        "is this really one sentence per line?"
                    )
                continue
            chunk = carry + block[: end + 1]
            carry = block[end + 1 :]
            yield line, chunk
            line += chunk.count(b"\n")


def decode_chunk(path: Path, first_line: int, raw: bytes, max_line_bytes: int = 1 << 20) -> list[str]:
    """The lines of a chunk from ``iter_line_chunks``; errors name the file and line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + raw.count(b"\n", 0, e.start)
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[e.start]:02x})") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if "\r" in text:
        lines = [s[:-1] if s.endswith("\r") else s for s in lines]
    longest = max(map(len, lines), default=0)
    if longest > max_line_bytes:
        i = next(i for i, s in enumerate(lines) if len(s) == longest)
        raise DataError(
            f"{path}:{first_line + i}: line of {longest:,} characters (more than {max_line_bytes:,}); "
            "is this really one sentence per line?"
        )
    return lines


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_HASH_CACHE_BYTES = 16 << 20
"""Files at least this large have their SHA-256 remembered (by path, size, mtime and inode)."""


def cached_sha256(path: Path) -> str:
    """``sha256_file(path)``, remembered for large files in ``data/cache/sha256.json``.

    Hashing WMT'14's 1.3 GB of text takes seconds; a file whose size, modification time and inode are
    unchanged is not read again. A changed file is rehashed, so the data hashes in provenance.json and
    in the cache keys stay exact.
    """
    st = path.stat()
    if st.st_size < _HASH_CACHE_BYTES:
        return sha256_file(path)
    book_path = data_root() / "cache" / "sha256.json"
    key, stamp = str(path.resolve()), [st.st_size, st.st_mtime_ns, st.st_ino]
    try:
        book = json.loads(book_path.read_text())
    except (OSError, ValueError):
        book = {}
    entry = book.get(key)
    if isinstance(entry, dict) and entry.get("stamp") == stamp:
        return entry["sha256"]
    digest = sha256_file(path)
    book[key] = {"stamp": stamp, "sha256": digest}
    try:
        book_path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(book_path, json.dumps(book))
    except OSError:
        pass  # a read-only data root: hash again next time
    return digest


@dataclass
class Corpus:
    """A resolved corpus: its folder, its language pair and what it is."""

    name: str
    path: Path
    src: str
    tgt: str
    protocol: Protocol | None = None  # how its test set is scored; None: default_protocol (a folder of one's own)
    stems: dict[str, str] = field(default_factory=dict)  # file stem of a split not named after it (tst2013 …)
    about: str = ""  # what it is, for people, where its folder and protocol do not say it (the toy corpus)

    def __post_init__(self) -> None:
        if self.protocol is None:
            self.protocol = default_protocol(self.tgt)

    def description(self) -> str:
        """What the run trains on, in one line for the log."""
        return self.about or f"{self.path} ({self.src}→{self.tgt}); scored by {self.protocol.description()}"

    def file(self, split: str, lang: str) -> Path:
        return self.path / f"{self.stems.get(split, split)}.{lang}"

    def files(self) -> list[Path]:
        return [self.file(split, lang) for split in SPLITS for lang in (self.src, self.tgt)]

    def read_split(self, split: str) -> tuple[list[str], list[str]]:
        """Source and target lines of a split, checked to be non-empty and line-aligned."""
        src_path, tgt_path = self.file(split, self.src), self.file(split, self.tgt)
        src, tgt = read_lines(src_path), read_lines(tgt_path)
        if not src:
            raise DataError(f"{src_path}: the {split} split is empty")
        if len(src) != len(tgt):
            raise DataError(
                f"{src_path} has {len(src):,} lines but {tgt_path} has {len(tgt):,}: "
                "source and target files must be line-aligned"
            )
        return src, tgt

    def hashes(self) -> dict[str, str]:
        return {str(p): cached_sha256(p) for p in self.files()}

"""Parallel corpora on disk: the ``--data DIR`` layout, and the names ``--data`` accepts.

A corpus folder holds line-aligned plain UTF-8 text, one sentence per line::

    train.{src} train.{tgt}   valid.{src} valid.{tgt}   test.{src} test.{tgt}

Lines are split on ``\\n`` only (a trailing ``\\r`` is dropped). ``str.splitlines()`` is never used:
it also splits on U+0085, U+2028 and other characters that occur inside sentences of real WMT data, and
would silently misalign the two sides.

Every problem with the files raises ``DataError`` with a one-line message naming the file (and line);
the command-line entry points print it without a traceback.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "valid", "test")
TOY = "toy"
"""The embedded default: a corpus the project generates itself (``nmt.data.synthetic``)."""


class DataError(Exception):
    """Bad or missing input data. The message names the file (and line) or the flag."""


def data_root() -> Path:
    """Where downloads, generated corpora and caches live: ``$NMT_DATA_ROOT`` or ``./data``."""
    return Path(os.environ.get("NMT_DATA_ROOT", "data"))


def read_lines(path: Path, max_line_bytes: int = 1 << 20) -> list[str]:
    """The lines of a UTF-8 text file, split on ``\\n`` only, without line terminators."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[e.start]:02x})") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    for i, line in enumerate(lines):
        if line.endswith("\r"):
            lines[i] = line = line[:-1]
        if len(line) > max_line_bytes:
            raise DataError(
                f"{path}:{i + 1}: line of {len(line):,} characters (more than {max_line_bytes:,}); "
                "is this really one sentence per line?"
            )
    return lines


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Corpus:
    """A resolved corpus: its folder, its language pair and what it is."""

    name: str
    path: Path
    src: str
    tgt: str
    is_toy: bool = False

    def file(self, split: str, lang: str) -> Path:
        return self.path / f"{split}.{lang}"

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
        return {str(p): sha256_file(p) for p in self.files()}


def languages_in(folder: Path) -> list[str]:
    """The language codes ``train.*`` files in ``folder`` are named with, sorted."""
    return sorted(p.suffix[1:] for p in folder.glob("train.*") if p.suffix[1:])


def resolve_corpus(data: str, src: str | None, tgt: str | None) -> Corpus:
    """Turn ``--data`` (``toy`` or a folder) and ``--src/--tgt`` into a checked ``Corpus``.

    The toy corpus is generated into ``data/toy-en-de`` the first time it is asked for.
    """
    if data == TOY:
        from nmt.data import synthetic

        if (src, tgt) not in ((None, None), ("en", "de")):
            raise DataError(f"--src/--tgt: the toy corpus is en→de only, got {src}→{tgt}")
        folder = data_root() / "toy-en-de"
        try:
            synthetic.write_corpus(folder)
        except FileExistsError as e:
            raise DataError(f"--data toy: {e}") from None
        return Corpus(TOY, folder, "en", "de", is_toy=True)

    folder = Path(data)
    if not folder.is_dir():
        raise DataError(
            f"--data {data}: no such folder. Give a folder holding train/valid/test.{{src,tgt}} files, "
            f"or '{TOY}' for the embedded toy corpus"
        )
    langs = languages_in(folder)
    if src is None and tgt is None:
        if len(langs) == 2 and "en" in langs:
            src, tgt = "en", next(lang for lang in langs if lang != "en")
        else:
            raise DataError(f"--data {data}: languages {langs or 'none'} found; say which with --src and --tgt")
    elif src is None or tgt is None:
        raise DataError("--src and --tgt go together: give both or neither")
    corpus = Corpus(folder.name, folder, src, tgt)
    missing = [str(p) for p in corpus.files() if not p.is_file()]
    if missing:
        raise DataError(f"--data {data}: missing {', '.join(missing)} (languages found: {', '.join(langs) or 'none'})")
    return corpus

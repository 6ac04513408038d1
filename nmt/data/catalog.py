"""The named datasets ``--data`` accepts, where their files come from, and how their test sets are scored.

A BLEU number can be compared with another only when both were computed the same way: on the same test
set, and either on detokenized text with sacreBLEU's 13a tokenization or on the corpus's own tokens for
a corpus that is distributed tokenized. Each benchmark's literature uses one such protocol. Naming a
dataset (``--data wmt14-en-de``) therefore fixes two things at once: its files (found locally, or
fetched once and written as a plain ``--data DIR`` folder) and the ``Protocol`` its results are scored
with, by training (validation and test BLEU) and by ``evaluate.py`` (the extra metrics of its literature).

Named datasets (``DATASETS``):

- ``wmt14-en-de``: WMT'14 English-German, 4,508,785 training pairs, newstest2013 (valid), the full
  3,003-line newstest2014 (test); sacreBLEU 13a, plus the compound-split tokenized BLEU of Vaswani et
  al. (2017) into German. Looked up in ``data_root()/wmt14-en-de/``; if that folder does not exist it is
  loaded with Hugging Face ``datasets`` (``wmt/wmt14``, config ``de-en``; from the hub or its cache, or
  from a local copy of the hub repository under ``$NMT_HF_MIRROR``) and written there once.
  If the hub cannot be reached within ``HUB_PROBE_S`` seconds, ``datasets`` looks in its cache only
  instead of retrying for most of a minute.
- ``iwslt15-en-vi``: IWSLT'15 English-Vietnamese as preprocessed by Stanford NLP (Luong & Manning 2015),
  133,317 training pairs, tst2012 (valid), tst2013 (test), Moses-tokenized; BLEU on its own tokens.
  Looked up in ``data_root()/iwslt15-en-vi/``, under the layout names or Stanford's file names; if that
  folder does not exist, Stanford's six files are downloaded into it (``nmt.data.download``: complete and
  checked, or not at all), under their own names.

Downloading (from the hub or from Stanford) is turned off by ``download=False`` (train.py's
``--no-download``) or the environment variable ``NMT_NO_DOWNLOAD=1``: then only local files, the
``datasets`` cache and ``$NMT_HF_MIRROR`` are used.

Any other folder gets ``default_protocol``: sacreBLEU 13a, and compound-split BLEU when the target
language is German. A folder whose name is a dataset's name (``.../iwslt15-en-vi``) is that dataset.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from nmt.data.corpus import SPLITS, Corpus, DataError, data_root, decode_chunk, iter_line_chunks
from nmt.data.download import DownloadError, fetch_folder, unreachable

HF_MIRROR_ENV = "NMT_HF_MIRROR"
"""Environment variable: a folder holding local copies of hub dataset repositories, as ``DIR/<owner>/<name>``."""

NO_DOWNLOAD_ENV = "NMT_NO_DOWNLOAD"
"""Environment variable: set (to anything but 0, false, no or nothing), no named dataset is downloaded."""

HUB_PROBE_S = 5
"""Seconds the Hugging Face hub has to answer before ``datasets`` is told to use its cache only."""

EXTRA_METRICS = {
    "compound_split_bleu": "tokenized BLEU with compound splitting (Vaswani et al. 2017)",
    "tokenized_bleu": "BLEU on the references' own whitespace tokens (multi-bleu.perl style)",
}
"""The extra scores a protocol may ask for (computed by ``nmt.metrics`` functions of the same name)."""

ONLY_INTO = {"compound_split_bleu": "de"}
"""Extra scores that exist for one target language only (Moses German tokenization, hyphen splitting)."""

HUB_BATCH_ROWS = 50_000
"""Rows per batch when a hub dataset is written out as text: memory stays bounded whatever its size."""

BLEU_TOKENIZE = {
    "13a": "sacreBLEU 13a on detokenized text",
    "none": "BLEU on the corpus's own whitespace tokens, no further tokenization",
}

# The characters that would break the one-sentence-per-line layout: ``\n`` ends a line, and ``\r``
# before it would be taken for a CRLF ending. Other characters that str.splitlines() treats as line
# breaks (U+0085, U+2028, …) occur inside real WMT sentences and are kept: our reader splits on
# ``\n`` only, and valid/test references must stay exactly as distributed.
LINE_BREAKS = "\n\r"
_LINE_BREAKS_RE = "[" + LINE_BREAKS + "]"


@dataclass(frozen=True)
class Protocol:
    """How a dataset's test set is scored.

    ``bleu_tokenize`` is the tokenization of the BLEU the protocol reports: ``"13a"`` (sacreBLEU on
    detokenized text) or ``"none"`` (whitespace tokens as distributed, for corpora distributed
    tokenized). Training's validation and test BLEU use it. ``extra`` names scores that ``evaluate.py``
    reports beside sacreBLEU 13a and chrF++ (keys of ``EXTRA_METRICS``); with ``"none"`` it must include
    ``"tokenized_bleu"``, the protocol's own number.
    """

    test_set: str = "the corpus's test split"
    bleu_tokenize: str = "13a"
    extra: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.bleu_tokenize not in BLEU_TOKENIZE:
            raise ValueError(f"bleu_tokenize must be one of {', '.join(BLEU_TOKENIZE)}, got {self.bleu_tokenize!r}")
        unknown = [m for m in self.extra if m not in EXTRA_METRICS]
        if unknown:
            raise ValueError(f"unknown extra metric {unknown[0]!r} (known: {', '.join(EXTRA_METRICS)})")
        if self.bleu_tokenize == "none" and "tokenized_bleu" not in self.extra:
            raise ValueError("bleu_tokenize 'none' needs 'tokenized_bleu' among the extra metrics")

    def for_target(self, tgt: str) -> Protocol:
        """This protocol without the extra scores that do not exist for target language ``tgt``."""
        extra = tuple(m for m in self.extra if ONLY_INTO.get(m, tgt) == tgt)
        return self if extra == self.extra else Protocol(self.test_set, self.bleu_tokenize, extra)

    def key(self) -> str:
        """What two scores must share to be comparable, besides the test references and the decoding."""
        return "|".join(["tokenized" if self.bleu_tokenize == "none" else f"tok:{self.bleu_tokenize}", *self.extra])

    def description(self) -> str:
        text = f"{self.test_set}; BLEU: {BLEU_TOKENIZE[self.bleu_tokenize]}"
        others = [EXTRA_METRICS[m] for m in self.extra if not (m == "tokenized_bleu" and self.bleu_tokenize == "none")]
        return text + "".join(f"; also {m}" for m in others)

    def to_dict(self) -> dict:
        return {**asdict(self), "extra": list(self.extra), "description": self.description()}


def default_protocol(tgt: str) -> Protocol:
    """The protocol of a folder that is no named dataset: sacreBLEU 13a (and compound-split BLEU into German)."""
    return Protocol(extra=("compound_split_bleu",)).for_target(tgt)


@dataclass(frozen=True)
class Download:
    """Where a named dataset's files are downloaded from when its folder is missing, and what they must hold.

    The files are ``<base>/<stem>.<lang>`` with the dataset's own stems (``NamedDataset.other_stems``, the
    split's name otherwise), kept under those names. Before anything is kept, each file must be valid UTF-8
    and have its split's number of ``lines`` (the same for both languages, so the two sides are aligned).
    """

    base_url: str
    url_env: str  # an environment variable that replaces base_url (a mirror; the tests' local server)
    lines: tuple[tuple[str, int], ...]  # (split, lines of each of its files)
    size: str  # how much is downloaded, for people

    def base(self) -> str:
        return (os.environ.get(self.url_env) or self.base_url).rstrip("/")


@dataclass(frozen=True)
class NamedDataset:
    """A dataset ``--data NAME`` knows: its languages, files, protocol and origin."""

    name: str
    languages: tuple[str, str]  # the default direction is languages[0] → languages[1]
    protocol: Protocol
    origin: str  # where the files come from, for people
    other_stems: tuple[tuple[str, str], ...] = ()  # (split, file stem) of another accepted naming
    hub: tuple[str, str] | None = None  # (repository, config) on the Hugging Face hub
    hub_splits: tuple[tuple[str, str], ...] = (("train", "train"), ("valid", "validation"), ("test", "test"))
    download: Download | None = None  # plain files on a web server, fetched when the folder is missing
    get_it: str = ""  # how to obtain the files, one sentence

    def folder(self) -> Path:
        return data_root() / self.name

    def direction(self, src: str | None, tgt: str | None) -> tuple[str, str]:
        """``--src/--tgt`` checked against the dataset's languages; both None gives the default direction."""
        if src is None and tgt is None:
            return self.languages
        if src is None or tgt is None:
            raise DataError("--src and --tgt go together: give both or neither")
        if {src, tgt} != set(self.languages):
            a, b = self.languages
            raise DataError(f"--src/--tgt: {self.name} has the languages {a} and {b} ({a}→{b} or {b}→{a}), got {src}→{tgt}")
        return src, tgt

    def file_names(self) -> list[str]:
        return [f"{split}.{lang}" for split in SPLITS for lang in self.languages]

    def stems_in(self, folder: Path, langs: tuple[str, str], partial: bool = False) -> dict[str, str] | None:
        """The file stem of each split in ``folder`` (layout names first), or None if a split is missing.

        Only stems that differ from the split's name are returned; with ``partial``, every split found
        is returned (stem = name included) and missing ones are left out instead of giving None.
        """
        stems = {}
        others = dict(self.other_stems)
        for split in SPLITS:
            for stem in (split, others.get(split)):
                if stem and all((folder / f"{stem}.{lang}").is_file() for lang in langs):
                    if stem != split or partial:
                        stems[split] = stem
                    break
            else:
                if not partial:
                    return None
        return stems

    def corpus_in(self, folder: Path, src: str | None, tgt: str | None, reason: str = "", given: str = "") -> Corpus:
        """The dataset as found in ``folder``; DataError naming the missing files if it is incomplete.

        ``given`` is what ``--data`` said, if not the dataset's name (a path), for the message.
        """
        src, tgt = self.direction(src, tgt)
        stems = self.stems_in(folder, (src, tgt))
        if stems is None:
            found = self.stems_in(folder, (src, tgt), partial=True)
            missing = [f"{split}.{lang}" for split in SPLITS if split not in found for lang in (src, tgt)
                       if not (folder / f"{split}.{lang}").is_file()]
            raise DataError(self.not_found(folder, f"{folder}/ lacks {', '.join(missing)}" + reason, given))
        return Corpus(self.name, folder, src, tgt, protocol=self.protocol.for_target(tgt), stems=stems)

    def not_found(self, folder: Path, why: str, given: str = "") -> str:
        """One line: why the dataset is not there, which files to put where, and how else to get it."""
        names = ", ".join(self.file_names())
        accepted = ""
        if self.other_stems:
            others = dict(self.other_stems)
            alt = ", ".join(f"{others.get(split, split)}.{lang}" for split in SPLITS for lang in self.languages)
            accepted = f" (the original names {alt} do too)"
        return f"--data {given or self.name}: {why}. Put the line-aligned files {names} in {folder}/{accepted}; {self.get_it}"


DATASETS = {
    d.name: d
    for d in (
        NamedDataset(
            name="wmt14-en-de",
            languages=("en", "de"),
            protocol=Protocol(
                test_set="newstest2014 (full, 3,003 lines)",
                bleu_tokenize="13a",
                extra=("compound_split_bleu",),
            ),
            origin="WMT'14 (statmt.org) via the Hugging Face hub: wmt/wmt14, config de-en (parquet)",
            hub=("wmt/wmt14", "de-en"),
            get_it=(
                "or, with network, let the Hugging Face datasets package fetch wmt/wmt14 (config de-en) into its "
                "cache, from where it is written there once; or set NMT_HF_MIRROR=DIR to a local copy of the hub "
                "repository made with 'hf download wmt/wmt14 --repo-type dataset --include \"de-en/*\" --include README.md "
                "--local-dir DIR/wmt/wmt14'"
            ),
        ),
        NamedDataset(
            name="iwslt15-en-vi",
            languages=("en", "vi"),
            protocol=Protocol(
                test_set="tst2013 (1,268 lines), Moses-tokenized references as distributed",
                bleu_tokenize="none",
                extra=("tokenized_bleu",),
            ),
            origin="Stanford NLP's IWSLT'15 English-Vietnamese files, https://nlp.stanford.edu/projects/nmt/",
            other_stems=(("valid", "tst2012"), ("test", "tst2013")),
            download=Download(
                base_url="https://nlp.stanford.edu/projects/nmt/data/iwslt15.en-vi",
                url_env="NMT_IWSLT15_URL",
                lines=(("train", 133_317), ("valid", 1_553), ("test", 1_268)),
                size="about 32 MB: train.en 13 MB, train.vi 18 MB, the test sets 0.1-0.2 MB each",
            ),
            get_it=(
                "download them from https://nlp.stanford.edu/projects/nmt/data/iwslt15.en-vi/ "
                "(train, tst2012 = valid, tst2013 = test)"
            ),
        ),
    )
}


def names() -> list[str]:
    return sorted(DATASETS)


def protocol_for(folder_name: str, tgt: str) -> Protocol:
    """The protocol of a folder: its dataset's if the folder is named after one, otherwise the default."""
    dataset = DATASETS.get(folder_name)
    return dataset.protocol.for_target(tgt) if dataset else default_protocol(tgt)


def resolve_named(name: str, src: str | None, tgt: str | None, download: bool = True, wait: bool = False) -> Corpus:
    """A named dataset as a ``Corpus``: from ``data_root()/<name>/``, or fetched there once.

    ``download=False`` (or ``$NMT_NO_DOWNLOAD``): nothing is downloaded; a hub dataset may still come from
    the ``datasets`` cache or ``$NMT_HF_MIRROR``. ``wait``: another process of this node fetches the folder
    (under data parallelism, its first process): wait until it appears instead of fetching it too.
    """
    dataset = DATASETS[name]
    folder = dataset.folder()
    dataset.direction(src, tgt)  # a bad pair is refused before anything is fetched
    if folder.is_dir():
        reason = ("; remove the folder to have it fetched from the hub" if dataset.hub
                  else "; remove the folder to have it downloaded" if dataset.download else "")
        return dataset.corpus_in(folder, src, tgt, reason)
    if dataset.hub is None and dataset.download is None:
        raise DataError(dataset.not_found(folder, f"no folder {folder}/"))
    turned_off = download_turned_off(download)
    if turned_off and dataset.download is not None:
        raise DataError(dataset.not_found(folder, f"no folder {folder}/, and downloading is turned off ({turned_off})"))
    if wait:
        from nmt.launch import wait_for

        print(f"--data {name}: waiting for the first process of this node to fetch {folder}/", file=sys.stderr,
              flush=True)
        wait_for(folder)
    elif dataset.download is not None:
        download_named(dataset, folder)
    else:
        write_from_hub(dataset, folder, offline=turned_off and f"downloading is turned off ({turned_off})")
    return dataset.corpus_in(folder, src, tgt)


def download_turned_off(download: bool = True) -> str | None:
    """Why downloading is turned off (the flag or the environment variable), or None if it is not."""
    if not download:
        return "--no-download"
    value = os.environ.get(NO_DOWNLOAD_ENV, "")
    if value.strip().lower() not in ("", "0", "false", "no"):
        return f"{NO_DOWNLOAD_ENV}={value}"
    return None


def count_lines(path: Path) -> int:
    """The lines of a text file as the corpus reader splits them; DataError naming file and line if not UTF-8."""
    return sum(len(decode_chunk(path, first, raw)) for first, raw in iter_line_chunks(path))


def download_named(dataset: NamedDataset, folder: Path, lines: dict[str, int] | None = None) -> dict:
    """Download ``dataset``'s files into ``folder``, which then exists complete and checked, or not at all.

    ``lines``: how many lines each split's files must have; the dataset's own counts unless given (tests
    serve smaller files). Returns what ``origin.json`` holds (base URL, each file's URL, size and SHA-256).
    A failure raises DataError: one line saying that the download was tried, why it failed, and where
    to put the files by hand.
    """
    spec = dataset.download
    expected = dict(spec.lines if lines is None else lines)
    stems = dict(dataset.other_stems)
    base = spec.base()
    files, wanted = [], {}
    for split in SPLITS:
        for lang in dataset.languages:
            name = f"{stems.get(split, split)}.{lang}"
            files.append((f"{base}/{name}", name))
            wanted[name] = expected[split]

    def check(path: Path) -> None:
        found = count_lines(path)
        if found != wanted[path.name]:
            raise DataError(f"{path} has {found:,} lines, expected {wanted[path.name]:,}")

    print(f"--data {dataset.name}: downloading {len(files)} files ({spec.size}) from {base}/ into {folder}/",
          file=sys.stderr, flush=True)
    try:
        return fetch_folder(files, folder, check, origin={"dataset": dataset.name, "url": base})
    except DownloadError as e:
        raise DataError(dataset.not_found(folder, f"no folder {folder}/, and downloading it failed: {e}")) from None


def hub_location(dataset: NamedDataset) -> str:
    """What ``datasets.load_dataset`` is given: the repository id, or its copy under ``$NMT_HF_MIRROR``."""
    repo, _ = dataset.hub
    mirror = os.environ.get(HF_MIRROR_ENV)
    if not mirror:
        return repo
    local = Path(mirror) / repo
    if not local.is_dir():
        raise DataError(
            f"{HF_MIRROR_ENV}={mirror}: no folder {local} (make it with 'hf download {repo} --repo-type dataset "
            f"--local-dir {local}', or unset {HF_MIRROR_ENV})"
        )
    return str(local)


def hub_offline_by_user() -> bool:
    """The user has put ``datasets`` and ``huggingface_hub`` offline (``HF_HUB_OFFLINE``, ``HF_DATASETS_OFFLINE``)."""
    return any(os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_unreachable(repo: str) -> str | None:
    """Why the Hugging Face hub (``$HF_ENDPOINT``, default huggingface.co) cannot be reached, or None if it answers.

    Asked within ``HUB_PROBE_S`` seconds: ``datasets`` itself would retry for most of a minute before failing.
    """
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    problem = unreachable(f"{endpoint}/api/datasets/{repo}", HUB_PROBE_S)
    return f"the Hugging Face hub {endpoint} cannot be reached ({problem})" if problem else None


@contextmanager
def hub_offline(on: bool = True):
    """``datasets`` and ``huggingface_hub`` in offline mode (their cache only) while inside, if ``on``.

    Their offline switches are read from the environment when they are imported; this sets the values they
    consult at each call (``datasets.config.HF_HUB_OFFLINE``, ``huggingface_hub.constants.HF_HUB_OFFLINE``)
    and puts them back afterwards.
    """
    if not on:
        yield
        return
    import datasets.config
    import huggingface_hub.constants

    switches = [(datasets.config, "HF_HUB_OFFLINE"), (datasets.config, "HF_DATASETS_OFFLINE"),
                (huggingface_hub.constants, "HF_HUB_OFFLINE")]
    saved = [(module, name, getattr(module, name)) for module, name in switches if hasattr(module, name)]
    for module, name, _ in saved:
        setattr(module, name, True)
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def load_from_hub(dataset: NamedDataset, offline: str | None = None):
    """The hub dataset as a ``datasets.DatasetDict``, or DataError saying where else to get it.

    ``offline``: why the hub must not be asked (downloading turned off); ``datasets`` then uses its cache
    only. The hub is also left alone when it does not answer within ``HUB_PROBE_S`` seconds.
    """
    location = hub_location(dataset)
    try:
        import datasets
    except ImportError:
        raise DataError(dataset.not_found(dataset.folder(), "not found, and the datasets package is not installed")) from None
    config = dataset.hub[1]
    from_hub = location == dataset.hub[0]
    if from_hub and offline is None and not hub_offline_by_user():
        offline = hub_unreachable(location)
        if offline:
            print(f"--data {dataset.name}: {offline}: looking in the datasets cache only", file=sys.stderr, flush=True)
    # A local copy may hold this config's files only; datasets picks the file format from the first config
    # in README.md, so it is told this config's files (the hub's parquet layout: <config>/<split>-*).
    files = None if from_hub else {s: f"{config}/{s}-*" for _, s in dataset.hub_splits}
    try:
        with hub_offline(from_hub and offline is not None):
            loaded = datasets.load_dataset(location, config, data_files=files)
    except Exception as e:  # datasets raises many kinds (offline, missing files, bad metadata): all mean "not here"
        if from_hub and offline:
            detail = f"{offline}, and the datasets cache holds no copy"
        else:
            detail = f"{type(e).__name__}: " + (str(e).strip().splitlines() or [""])[0][:300]
        why = f"not found locally, and loading {location} ({config}) failed: {detail}"
        raise DataError(dataset.not_found(dataset.folder(), why)) from None
    for _, hub_split in dataset.hub_splits:
        feature = loaded[hub_split].features.get("translation") if hub_split in loaded else None
        langs = set(feature) if isinstance(feature, dict) else set(getattr(feature, "languages", ()))
        if not set(dataset.languages) <= langs:
            raise DataError(f"--data {dataset.name}: {location} ({config}) has no split '{hub_split}' with a "
                            f"'translation' column holding {' and '.join(dataset.languages)}")
    return loaded


def write_from_hub(dataset: NamedDataset, folder: Path, batch_size: int | None = None,
                   offline: str | None = None) -> dict:
    """Load ``dataset`` from the hub and write it into ``folder`` as the ``--data DIR`` layout, once.

    Streamed in batches of ``batch_size`` rows (default ``HUB_BATCH_ROWS``), so memory does not grow with
    the corpus. Line breaks inside a sentence (any character in ``LINE_BREAKS``) become a space, and
    missing sentences an empty line, so the files stay line-aligned; both are counted in ``origin.json``. The files are written
    into a temporary sibling folder which is then renamed, so ``folder`` is either complete or absent;
    if another process got there first, its copy is kept. Returns what ``origin.json`` holds. ``offline``: see
    ``load_from_hub``.
    """
    import pyarrow.compute as pc

    loaded = load_from_hub(dataset, offline)
    batch_size = batch_size or HUB_BATCH_ROWS
    print(f"--data {dataset.name}: writing {hub_location(dataset)} ({dataset.hub[1]}) to {folder}/ (once)",
          file=sys.stderr, flush=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.parent / f".{folder.name}.partial-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    origin = {"dataset": dataset.name, "hub": hub_location(dataset), "config": dataset.hub[1], "splits": {}}
    try:
        for split, hub_split in dataset.hub_splits:
            counts = {"hub_split": hub_split, "pairs": 0, "line_breaks_replaced": 0, "missing_sentences": 0}
            files = {lang: open(partial / f"{split}.{lang}", "w", encoding="utf-8", newline="\n") for lang in dataset.languages}
            try:
                for table in loaded[hub_split].with_format("arrow").iter(batch_size=batch_size):
                    column = table.column("translation")
                    counts["pairs"] += len(column)
                    for lang, f in files.items():
                        text = pc.struct_field(column, lang)
                        counts["missing_sentences"] += text.null_count
                        text = pc.fill_null(text, "")
                        counts["line_breaks_replaced"] += pc.sum(pc.count_substring_regex(text, _LINE_BREAKS_RE)).as_py() or 0
                        text = pc.replace_substring_regex(text, _LINE_BREAKS_RE, " ")
                        if len(text):
                            f.write("\n".join(text.to_pylist()) + "\n")
            finally:
                for f in files.values():
                    f.close()
            origin["splits"][split] = counts
        (partial / "origin.json").write_text(json.dumps(origin, indent=2) + "\n")
        try:
            os.rename(partial, folder)
        except OSError:
            if not folder.is_dir():
                raise
    except OSError as e:
        raise DataError(f"--data {dataset.name}: cannot write {folder}/ ({e.strerror or e})") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return origin

"""Named datasets (nmt.data.catalog): where their files are found, how they are fetched, how they are scored.

Everything runs on files the tests write: a local folder in the --data DIR layout, Stanford's IWSLT file
names, and a small copy of the WMT'14 hub repository in the hub's own parquet layout, loaded offline by
the real ``datasets`` package.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nmt.data.catalog import DATASETS, protocol_for, resolve_corpus
from nmt.data.corpus import Corpus, DataError, read_lines
from nmt.data.protocol import Protocol, default_protocol
from nmt.evaluate import extra_scores, scoring_protocol

ROOT = Path(__file__).resolve().parents[1]
LAYOUT = {"train": "train", "valid": "valid", "test": "test"}
STANFORD = {"train": "train", "valid": "tst2012", "test": "tst2013"}


@pytest.fixture
def root(tmp_path, monkeypatch):
    """An empty data root, no hub mirror, no downloads, and a ``datasets`` package that cannot be imported."""
    monkeypatch.setenv("NMT_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("NMT_HF_MIRROR", raising=False)
    monkeypatch.setenv("NMT_NO_DOWNLOAD", "1")  # tests/test_download.py downloads, from a local server
    monkeypatch.setitem(sys.modules, "datasets", None)  # any "import datasets" raises ImportError
    return tmp_path / "data"


def write_pairs(folder: Path, langs=("en", "de"), names=LAYOUT, n=4):
    """Line-aligned files; each line says which split and language it belongs to."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, stem in names.items():
        for lang in langs:
            (folder / f"{stem}.{lang}").write_text("".join(f"{split} {lang} {i} &apos;s\n" for i in range(n)),
                                                   encoding="utf-8")
    return folder


# ---------------------------------------------------------------- protocols


def test_default_protocol_is_sacrebleu_with_compound_split_only_into_german():
    into_de, into_vi = default_protocol("de"), default_protocol("vi")
    assert (into_de.bleu_tokenize, into_de.extra) == ("13a", ("compound_split_bleu",))
    assert (into_vi.bleu_tokenize, into_vi.extra) == ("13a", ())
    assert protocol_for("my-corpus", "de") == into_de and protocol_for("wmt14-en-de", "en").extra == ()
    assert Corpus("c", Path("c"), "en", "de").protocol == into_de  # a Corpus built by hand gets one too


def test_protocol_checks_and_describes_itself():
    with pytest.raises(ValueError, match="bleu_tokenize"):
        Protocol(bleu_tokenize="intl ")
    with pytest.raises(ValueError, match="unknown extra metric 'meteor'"):
        Protocol(extra=("meteor",))
    with pytest.raises(ValueError, match="needs 'tokenized_bleu'"):
        Protocol(bleu_tokenize="none")
    wmt = DATASETS["wmt14-en-de"].protocol
    assert "newstest2014 (full, 3,003 lines)" in wmt.description() and "compound splitting" in wmt.description()
    d = json.loads(json.dumps(wmt.to_dict()))
    assert d == {"test_set": wmt.test_set, "bleu_tokenize": "13a", "extra": ["compound_split_bleu"],
                 "description": wmt.description()}
    iwslt = DATASETS["iwslt15-en-vi"].protocol
    assert iwslt.key() == "tokenized|tokenized_bleu" and wmt.key() == "tok:13a|compound_split_bleu"
    assert "own whitespace tokens" in iwslt.description() and "tst2013" in iwslt.description()


def test_evaluate_scores_what_the_protocol_names(tmp_path):
    hyps, refs = ["Hello, world !", "it is good ."], ["Hello , world !", "it is good ."]
    iwslt = write_pairs(tmp_path / "iwslt15-en-vi", ("en", "vi"))
    corpus = resolve_corpus(str(iwslt), None, None)
    scoring = scoring_protocol(corpus)
    assert scoring is corpus.protocol and scoring.bleu_tokenize == "none"
    scores = extra_scores(scoring, hyps, refs, corpus.tgt)
    assert list(scores) == ["tokenized_bleu"] and "tok:none" in scores["tokenized_bleu"]["signature"]
    assert scores["tokenized_bleu"]["score"] < 100  # "Hello," is not the reference's "Hello ," token

    plain = resolve_corpus(str(write_pairs(tmp_path / "news")), None, None)  # en→de, not a named dataset
    scores = extra_scores(scoring_protocol(plain), hyps, refs, plain.tgt)
    assert list(scores) == ["compound_split_bleu"] and "compound-split" in scores["compound_split_bleu"]["signature"]
    forced = scoring_protocol(plain, tokenized=True)  # evaluate.py --tokenized
    assert forced.extra == ("tokenized_bleu",) and "tokenized" in forced.key()
    reverse = resolve_corpus(str(write_pairs(tmp_path / "news")), "de", "en")
    assert extra_scores(scoring_protocol(reverse), hyps, refs, reverse.tgt) == {}


# ---------------------------------------------------------------- lookup


def test_unknown_name_lists_the_known_ones(root):
    with pytest.raises(DataError, match="no such folder") as e:
        resolve_corpus("wmt99-xx-yy", None, None)
    for name in ("toy", "iwslt15-en-vi", "wmt14-en-de"):
        assert name in str(e.value)


def test_the_toy_corpus_is_a_dataset_generated_on_demand(root, tmp_path, monkeypatch):
    corpus = resolve_corpus("toy", None, None)
    folder = root / "toy-en-de"
    assert (corpus.name, corpus.path, corpus.src, corpus.tgt) == ("toy", folder, "en", "de")
    assert corpus.protocol == default_protocol("de") and protocol_for("toy", "de") == default_protocol("de")
    assert corpus.description() == (f"the embedded toy corpus (generated en→de from a small grammar and lexicon, in "
                                    f"{folder}). It is a toy for trying the framework, not a benchmark.")
    assert [len(corpus.read_split(split)[0]) for split in ("train", "valid", "test")] == [20_000, 500, 1_000]
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    monkeypatch.chdir(tmp_path)
    write_pairs(tmp_path / "toy")  # a folder of one's own called toy, where --data toy would find it
    assert resolve_corpus("toy", None, None).path == folder  # --data toy is always the generated corpus
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files  # generated again, byte for byte
    own = resolve_corpus(str(tmp_path / "toy"), None, None)
    assert own.path == tmp_path / "toy" and own.read_split("test")[1][0] == "test de 0 &apos;s"
    assert own.description().startswith(f"{tmp_path / 'toy'} (en→de); scored by")
    with pytest.raises(DataError, match="^--src/--tgt: the toy corpus is en→de only, got de→en$"):
        resolve_corpus("toy", "de", "en")
    (folder / "train.de").write_text("verändert\n")
    with pytest.raises(DataError, match=f"^--data toy: {folder} exists and is not the complete corpus"):
        resolve_corpus("toy", None, None)


def test_any_folder_under_the_data_root_is_a_name(root):
    write_pairs(root / "my-corpus", ("en", "vi"))
    corpus = resolve_corpus("my-corpus", None, None)
    assert (corpus.name, corpus.path, corpus.src, corpus.tgt) == ("my-corpus", root / "my-corpus", "en", "vi")
    assert corpus.protocol == default_protocol("vi")


def test_local_wmt14_folder_wins_and_datasets_is_not_imported(root):
    write_pairs(root / "wmt14-en-de")
    corpus = resolve_corpus("wmt14-en-de", None, None)
    assert (corpus.name, corpus.src, corpus.tgt) == ("wmt14-en-de", "en", "de")
    assert (corpus.protocol == DATASETS["wmt14-en-de"].protocol
            and corpus.read_split("test")[1][0] == "test de 0 &apos;s")
    back = resolve_corpus("wmt14-en-de", "de", "en")
    assert (back.src, back.tgt, back.protocol.extra) == ("de", "en", ())  # compound splitting is for German output


def test_wrong_language_pair_is_refused_before_anything_is_fetched(root):
    with pytest.raises(DataError) as e:
        resolve_corpus("wmt14-en-de", "fr", "en")
    assert str(e.value) == "--src/--tgt: wmt14-en-de has the languages en and de (en→de or de→en), got fr→en"
    with pytest.raises(DataError, match="--src/--tgt: iwslt15-en-vi has the languages en and vi"):
        resolve_corpus("iwslt15-en-vi", "en", "de")
    with pytest.raises(DataError, match="give both or neither"):
        resolve_corpus("wmt14-en-de", "de", None)
    assert not root.exists()


def test_wmt14_not_found_says_what_to_put_where(root):
    with pytest.raises(DataError) as e:
        resolve_corpus("wmt14-en-de", None, None)
    message = str(e.value)
    assert "\n" not in message and "datasets package is not installed" in message
    assert f"train.en, train.de, valid.en, valid.de, test.en, test.de in {root / 'wmt14-en-de'}/" in message
    assert "NMT_HF_MIRROR=DIR" in message and "hf download wmt/wmt14 --repo-type dataset" in message


def test_incomplete_local_wmt14_folder_names_the_missing_files(root):
    write_pairs(root / "wmt14-en-de")
    (root / "wmt14-en-de" / "valid.de").unlink()
    with pytest.raises(DataError, match=r"wmt14-en-de/ lacks valid\.de; remove the folder to have it fetched"):
        resolve_corpus("wmt14-en-de", None, None)


def test_missing_mirror_folder(root, monkeypatch, tmp_path):
    monkeypatch.setenv("NMT_HF_MIRROR", str(tmp_path / "mirror"))
    with pytest.raises(DataError, match=r"NMT_HF_MIRROR=.*mirror: no folder .*mirror/wmt/wmt14"):
        resolve_corpus("wmt14-en-de", None, None)


def test_iwslt_under_stanford_names(root):
    folder = write_pairs(root / "iwslt15-en-vi", ("en", "vi"), STANFORD)
    (folder / "vocab.en").write_text("<unk>\n<s>\n</s>\n")  # what else the download holds is ignored
    corpus = resolve_corpus("iwslt15-en-vi", None, None)
    assert (corpus.src, corpus.tgt) == ("en", "vi")
    assert [p.name for p in corpus.files()] == ["train.en", "train.vi", "tst2012.en", "tst2012.vi",
                                                "tst2013.en", "tst2013.vi"]
    src, ref = corpus.read_split("test")
    assert src[1] == "test en 1 &apos;s" and ref[1] == "test vi 1 &apos;s"  # references exactly as distributed
    assert corpus.read_split("valid")[0][0] == "valid en 0 &apos;s"
    assert len(corpus.hashes()) == 6
    assert (corpus.protocol.bleu_tokenize, corpus.protocol.extra) == ("none", ("tokenized_bleu",))
    assert resolve_corpus("iwslt15-en-vi", "vi", "en").file("test", "vi").name == "tst2013.vi"


def test_iwslt_under_layout_names_and_by_path(root, tmp_path):
    write_pairs(root / "iwslt15-en-vi", ("en", "vi"))
    corpus = resolve_corpus("iwslt15-en-vi", None, None)
    assert corpus.file("test", "vi") == root / "iwslt15-en-vi" / "test.vi" and corpus.protocol.bleu_tokenize == "none"
    # a folder elsewhere, named after the dataset (as ../shared/data/iwslt15-en-vi), is that dataset
    elsewhere = write_pairs(tmp_path / "shared" / "iwslt15-en-vi", ("en", "vi"))
    by_path = resolve_corpus(str(elsewhere), None, None)
    assert by_path.path == elsewhere and by_path.protocol == DATASETS["iwslt15-en-vi"].protocol


def test_iwslt_missing_training_set(root, tmp_path):
    folder = write_pairs(tmp_path / "iwslt15-en-vi", ("en", "vi"), STANFORD)  # dev/test only, as in ../shared/data
    (folder / "train.en").unlink()
    (folder / "train.vi").unlink()
    with pytest.raises(DataError) as e:
        resolve_corpus(str(folder), None, None)
    message = str(e.value)
    assert "\n" not in message and "lacks train.en, train.vi. Put" in message
    assert "https://nlp.stanford.edu/projects/nmt/data/iwslt15.en-vi/" in message
    with pytest.raises(DataError, match=r"no folder .*iwslt15-en-vi/, and downloading is turned off "
                                        r"\(NMT_NO_DOWNLOAD=1\)\. Put .*tst2013\.en.*nlp\.stanford\.edu"):
        resolve_corpus("iwslt15-en-vi", None, None)


# ---------------------------------------------------------------- the hub


HUB_ROWS = {  # hub split -> (de, en) pairs, some with line breaks inside a sentence
    "train": [("Ein Haus.", "A house."), ("Erste Zeile\nzweite Zeile", "First line\r\nsecond line"),
              ("Drei\u2028Teile", "Three\u2029parts"), ("Ein Baum.", "A tree.")],
    "validation": [("Guten Morgen.", "Good morning."), ("Danke!", "Thanks!")],
    "test": [("Die Katze schläft.", "The cat sleeps."), ("Ein Auto-Bahn\x85Satz", "A motorway sentence"),
             ("Ende.", "The end.")],
}
HUB_README = """---
dataset_info:
- config_name: cs-en
  features:
  - name: translation
    dtype:
      translation:
        languages:
        - cs
        - en
- config_name: de-en
  features:
  - name: translation
    dtype:
      translation:
        languages:
        - de
        - en
configs:
- config_name: cs-en
  data_files:
  - split: train
    path: cs-en/train-*
  - split: validation
    path: cs-en/validation-*
  - split: test
    path: cs-en/test-*
- config_name: de-en
  data_files:
  - split: train
    path: de-en/train-*
  - split: validation
    path: de-en/validation-*
  - split: test
    path: de-en/test-*
---

# wmt14 (a small stand-in with the hub repository's layout)
"""


def make_hub_mirror(mirror: Path, langs=("de", "en")) -> Path:
    """``mirror/wmt/wmt14`` laid out as the hub repository: parquet shards per config and split, configs in README.md.

    As on the hub, README.md lists cs-en before de-en; as in a copy made with ``--include "de-en/*"``, only
    de-en's files are there.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    repo = mirror / "wmt" / "wmt14"
    (repo / "de-en").mkdir(parents=True)
    struct = pa.struct([(lang, pa.string()) for lang in langs])
    for split, rows in HUB_ROWS.items():
        column = pa.array([dict(zip(langs, row)) for row in rows], type=struct)
        pq.write_table(pa.table({"translation": column}), repo / "de-en" / f"{split}-00000-of-00001.parquet")
    (repo / "README.md").write_text(HUB_README)
    return repo


def offline_env(tmp_path: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NMT_HF_MIRROR"}
    env.update(NMT_DATA_ROOT=str(tmp_path / "data"), HF_HOME=str(tmp_path / "hf"), HF_DATASETS_OFFLINE="1",
               HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), **extra)
    return env


def test_wmt14_from_a_local_hub_mirror_offline(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    make_hub_mirror(tmp_path / "mirror")
    # a fresh process, so that datasets reads HF_HOME and the offline switches from this environment
    code = "\n".join([
        "from nmt.data import catalog",
        "from nmt.data.catalog import resolve_corpus",
        "catalog.HUB_BATCH_ROWS = 3  # several batches per split",
        "c = resolve_corpus('wmt14-en-de', None, None)",
        "print(c.src, c.tgt)",
        "d = catalog.DATASETS['wmt14-en-de']",
        "(d.folder() / 'marker').write_text('first')",
        "catalog.write_from_hub(d, d.folder())  # as a second process that finished last: the first copy stays",
    ])
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=offline_env(tmp_path, NMT_HF_MIRROR=str(tmp_path / "mirror")))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.split() == ["en", "de"] and "writing" in proc.stderr

    folder = tmp_path / "data" / "wmt14-en-de"
    assert sorted(p.name for p in folder.iterdir()) == [
        "marker", "origin.json", "test.de", "test.en", "train.de", "train.en", "valid.de", "valid.en"]
    assert [p.name for p in folder.parent.iterdir()] == ["wmt14-en-de"]  # no temporary folder left behind
    assert any((tmp_path / "hf").rglob("*.arrow"))  # datasets used the cache HF_HOME points at
    expected = {"train": "train", "valid": "validation", "test": "test"}
    for split, hub_split in expected.items():
        for lang, side in (("de", 0), ("en", 1)):
            raw = (folder / f"{split}.{lang}").read_bytes().decode("utf-8")
            assert raw.endswith("\n") and raw.count("\n") == len(HUB_ROWS[hub_split])
            # \n and \r become one space each; U+2028, U+2029 and U+0085 are sentence content and stay
            want = [row[side].translate({ord(c): " " for c in "\n\r"}) for row in HUB_ROWS[hub_split]]
            assert read_lines(folder / f"{split}.{lang}") == want
    assert read_lines(folder / "train.en")[1:3] == ["First line  second line", "Three\u2029parts"]
    assert read_lines(folder / "test.de")[1] == "Ein Auto-Bahn\x85Satz"  # a reference stays as distributed
    origin = json.loads((folder / "origin.json").read_text())
    assert origin["config"] == "de-en" and origin["hub"] == str(tmp_path / "mirror" / "wmt" / "wmt14")
    assert origin["splits"]["train"] == {"hub_split": "train", "pairs": 4, "line_breaks_replaced": 3,
                                         "missing_sentences": 0}
    assert origin["splits"]["test"]["line_breaks_replaced"] == 0

    # the second time the folder is there: no datasets, no mirror needed, either direction
    monkeypatch.setenv("NMT_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("NMT_HF_MIRROR", raising=False)
    monkeypatch.setitem(sys.modules, "datasets", None)
    corpus = resolve_corpus("wmt14-en-de", "de", "en")
    src, ref = corpus.read_split("test")
    assert (src[0], ref[0]) == ("Die Katze schläft.", "The cat sleeps.") and len(src) == 3
    assert corpus.read_split("valid") == (["Guten Morgen.", "Danke!"], ["Good morning.", "Thanks!"])
    assert resolve_corpus("wmt14-en-de", None, None).protocol.extra == ("compound_split_bleu",)


def test_a_mirror_with_other_languages_is_refused(tmp_path):
    pytest.importorskip("datasets")
    make_hub_mirror(tmp_path / "mirror", langs=("fr", "en"))
    code = "from nmt.data.catalog import resolve_corpus; resolve_corpus('wmt14-en-de', None, None)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=offline_env(tmp_path, NMT_HF_MIRROR=str(tmp_path / "mirror")))
    assert proc.returncode != 0 and "has no split 'train' with a 'translation' column holding en and de" in proc.stderr
    assert not (tmp_path / "data" / "wmt14-en-de").exists()


def test_wmt14_offline_without_a_copy_is_one_line_from_train_py(tmp_path):
    """With datasets installed but offline and nothing cached: train.py exits 2 with one line, no traceback."""
    pytest.importorskip("datasets")
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--data", "wmt14-en-de",
                           "--run-dir", str(tmp_path / "r")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, env=offline_env(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error: --data wmt14-en-de: not found locally, "
                           "and loading wmt/wmt14 (de-en) failed")
    assert f"train.en, train.de, valid.en, valid.de, test.en, test.de in {tmp_path / 'data' / 'wmt14-en-de'}/" in last
    assert not (tmp_path / "data" / "wmt14-en-de").exists() and not (tmp_path / "r").exists()


# ---------------------------------------------------------------- training uses the protocol


def test_training_on_iwslt_scores_tokenized_bleu(root, tmp_path, monkeypatch):
    from nmt.data import synthetic
    from nmt.train import main

    monkeypatch.chdir(tmp_path)
    pairs = synthetic.generate_pairs(100, seed=3)  # any parallel text will do; the files carry Stanford's names
    folder = root / "iwslt15-en-vi"
    folder.mkdir(parents=True)
    for stem, (lo, hi) in {"train": (0, 80), "tst2012": (80, 90), "tst2013": (90, 100)}.items():
        (folder / f"{stem}.en").write_text("".join(e + " .\n" for e, _ in pairs[lo:hi]))
        (folder / f"{stem}.vi").write_text("".join(d + " .\n" for _, d in pairs[lo:hi]))
    run = tmp_path / "run"
    assert main(["--data", "iwslt15-en-vi", "--vocab-size", "400", "--max-tokens", "256", "--max-steps", "4",
                 "--log-every", "2", "--val-every", "0", "--run-dir", str(run)]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["protocol"] == DATASETS["iwslt15-en-vi"].protocol.to_dict()
    assert "tok:none" in results["test"]["signature"] and results["test"]["sentences"] == 10
    import torch

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["hyper_parameters"]["decoding"]["bleu_tokenize"] == "none"

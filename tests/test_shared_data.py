"""Integration: the data pipeline on the real corpora in ``../shared/data`` (skipped where that folder is absent).

Set ``NMT_SHARED_DATA`` to point elsewhere. These corpora are never copied into the project; unit tests
do not depend on them.
"""

import hashlib
import os
from pathlib import Path

import pytest

from conftest import ROOT
from http_site import REAL_LINES, Site, stanford_files
from nmt.data.catalog import DATASETS, resolve_corpus
from nmt.data.datamodule import TranslationData
from nmt.data.tokenizer import Tokenizer, spm_settings, train_or_load
from nmt.evaluate import extra_scores, scoring_protocol

SHARED = Path(os.environ.get("NMT_SHARED_DATA", ROOT.parent / "shared" / "data"))

# (folder, language pair, train / valid / test lines as distributed)
CORPORA = {
    "multi30k-en-de": (29_000, 1_014, 1_000),
    "wmt-news-en-de": (24_743, 3_000, 3_003),
}


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_real_corpus_preprocesses_cleanly(name, tmp_path):
    folder = SHARED / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (the shared corpora are not part of the repository)")
    corpus = resolve_corpus(str(folder), None, None)
    assert (corpus.src, corpus.tgt) == ("en", "de")
    hashes = corpus.hashes()
    files = [corpus.file("train", "en"), corpus.file("train", "de")]
    model = train_or_load(files, [hashes[str(f)] for f in files], tmp_path, spm_settings(4000, "unigram", 20_000, 1),
                          log=lambda m: None)
    messages = []
    data = TranslationData(corpus, Tokenizer(model), max_tokens=4096, max_len=256, seed=1, log=messages.append,
                           max_len_ratio=3.0, cache_root=tmp_path, file_hashes=hashes)
    data.setup()
    train, valid, test = CORPORA[name]
    assert ([len(data.datasets["train"].src), len(data.datasets["valid"]), len(data.datasets["test"])]
            == [train, valid, test])
    assert sum(data.filtered.values()) == train and data.filtered["kept"] > 0.99 * train  # every pair counted once
    assert len(data.references("test")) == test  # raw references, never filtered
    unknown = data.unknown_in_references("test")
    assert unknown["with_unknown"] == 0, unknown  # byte fallback: every character survives encode→decode
    share = data._make_sampler("train", shuffle=True, world=1, rank=0).padding()
    assert share["tgt"] >= 0.9 and share["src"] >= 0.8, share
    # the second preparation of the same data reads the cache
    again = TranslationData(corpus, Tokenizer(model), 4096, 256, 1, log=messages.append, cache_root=tmp_path,
                            file_hashes=hashes)
    again.setup()
    assert any("using cached" in m for m in messages)


def test_real_iwslt15_dev_and_test_through_the_catalog(tmp_path, monkeypatch):
    """Stanford's tst2012/tst2013 as distributed, downloaded from a local server and checked by the catalog.

    ``../shared/data/iwslt15-en-vi`` has the real dev and test files but not the training set, so a local
    server offers them under Stanford's names beside a made-up training set of the real length: the download
    checks them against the catalog's real line counts (1,553 and 1,268), unchanged.
    """
    folder = SHARED / "iwslt15-en-vi"
    if not (folder / "valid.en").is_file():
        pytest.skip(f"{folder} is absent (the shared corpora are not part of the repository)")
    files = stanford_files(REAL_LINES, splits=("train",))
    for split, stem in (("valid", "tst2012"), ("test", "tst2013")):
        for lang in ("en", "vi"):
            files[f"{stem}.{lang}"] = (folder / f"{split}.{lang}").read_bytes()
    monkeypatch.setenv("NMT_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("NMT_NO_DOWNLOAD", raising=False)
    with Site(files) as site:
        monkeypatch.setenv("NMT_IWSLT15_URL", site.url)
        corpus = resolve_corpus("iwslt15-en-vi", None, None)
    valid, test = corpus.read_split("valid"), corpus.read_split("test")
    assert [len(valid[0]), len(valid[1]), len(test[0]), len(test[1])] == [1_553, 1_553, 1_268, 1_268]
    assert {Path(p).name: h for p, h in corpus.hashes().items() if "train" not in p} == {
        name: hashlib.sha256(data).hexdigest() for name, data in files.items() if not name.startswith("train")}
    assert test[1][0].startswith("Khi tôi còn nhỏ , Tôi nghĩ rằng") and "&quot;" in test[1][0]  # as distributed
    # the protocol: BLEU on the references' own tokens (tst2013, as IWSLT'15 papers report it)
    protocol = scoring_protocol(corpus)
    assert protocol == DATASETS["iwslt15-en-vi"].protocol and protocol.bleu_tokenize == "none"
    own = extra_scores(protocol, test[1], test[1], corpus.tgt)["tokenized_bleu"]
    assert own["score"] == pytest.approx(100) and "tok:none" in own["signature"]
    copy = extra_scores(protocol, test[0], test[1], corpus.tgt)["tokenized_bleu"]  # English as the "translation"
    assert copy["score"] < 5

"""Integration: the data pipeline on the real corpora in ``../shared/data`` (skipped where that folder is absent).

Set ``NMT_SHARED_DATA`` to point elsewhere. These corpora are never copied into the project; unit tests
do not depend on them.
"""

import os
from pathlib import Path

import pytest

from conftest import ROOT
from nmt.data.corpus import resolve_corpus
from nmt.data.datamodule import TranslationData
from nmt.data.tokenizer import Tokenizer, spm_settings, train_or_load

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
    assert [len(data.datasets["train"].src), len(data.datasets["valid"]), len(data.datasets["test"])] == [train, valid, test]
    assert sum(data.filtered.values()) == train and data.filtered["kept"] > 0.99 * train  # every pair counted once
    assert len(data.references("test")) == test  # raw references, never filtered
    unknown = data.unknown_in_references("test")
    assert unknown["with_unknown"] == 0, unknown  # byte fallback: every character survives encode→decode
    share = data._make_sampler("train", shuffle=True, world=1, rank=0).padding()
    assert share["tgt"] >= 0.9 and share["src"] >= 0.8, share
    # the second preparation of the same data reads the cache
    again = TranslationData(corpus, Tokenizer(model), 4096, 256, 1, log=messages.append, cache_root=tmp_path, file_hashes=hashes)
    again.setup()
    assert any("using cached" in m for m in messages)

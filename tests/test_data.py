"""Reading corpora, SentencePiece, batching and collation, on files the tests write."""

from pathlib import Path

import numpy as np
import pytest

from nmt.data.batching import TokenBatchSampler, length_batches
from nmt.data.catalog import resolve_corpus
from nmt.data.corpus import Corpus, DataError, iter_line_chunks, read_lines
from nmt.data.datamodule import EncodedPairs, TranslationData, collate
from nmt.data.encoded import EncodedSide, encode_file, load_or_encode
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer, spm_settings, train_or_load
from nmt.train import main


def write_corpus(folder: Path, pairs=None, src="en", tgt="de", **override):
    folder.mkdir(parents=True, exist_ok=True)
    pairs = pairs or [(f"the house number {i} is small .", f"das Haus Nummer {i} ist klein .") for i in range(60)]
    for split in ("train", "valid", "test"):
        (folder / f"{split}.{src}").write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
        (folder / f"{split}.{tgt}").write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    for name, content in override.items():
        (folder / name.replace("_", ".")).write_bytes(content)
    return folder


def test_lines_split_on_newline_only(tmp_path):
    path = tmp_path / "f.de"
    path.write_bytes("ein Satz mit \u0085 darin\nzweiter\u2028Satz\r\ndritter\n".encode())
    assert read_lines(path) == ["ein Satz mit \u0085 darin", "zweiter\u2028Satz", "dritter"]


def test_no_final_newline_and_empty_lines_are_kept(tmp_path):
    path = tmp_path / "f.en"
    path.write_text("a\n\nb")
    assert read_lines(path) == ["a", "", "b"]


def test_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "train.en"
    path.write_bytes(b"good\nstill good\nbad \xff byte\n")
    with pytest.raises(DataError, match=r"train\.en:3: not valid UTF-8"):
        read_lines(path)


def test_enormous_line_is_refused(tmp_path):
    path = tmp_path / "train.en"
    path.write_text("short\n" + "x" * 5000 + "\n")
    with pytest.raises(DataError, match=r"train\.en:2: line of 5,000 characters"):
        read_lines(path, max_line_bytes=1000)


def test_mismatched_line_counts(tmp_path):
    folder = write_corpus(tmp_path / "c", train_de=b"nur eine Zeile\n")
    corpus = resolve_corpus(str(folder), None, None)
    with pytest.raises(DataError, match=r"train\.en has 60 lines but .*train\.de has 1"):
        corpus.read_split("train")


def test_empty_split(tmp_path):
    folder = write_corpus(tmp_path / "c", valid_en=b"", valid_de=b"")
    with pytest.raises(DataError, match=r"valid\.en: the valid split is empty"):
        resolve_corpus(str(folder), None, None).read_split("valid")


def test_missing_files_and_languages(tmp_path):
    folder = write_corpus(tmp_path / "c")
    (folder / "test.de").unlink()
    with pytest.raises(DataError, match=r"missing .*test\.de"):
        resolve_corpus(str(folder), None, None)
    with pytest.raises(DataError, match="no such folder"):
        resolve_corpus(str(tmp_path / "nope"), None, None)
    with pytest.raises(DataError, match="missing .*train.fr"):
        resolve_corpus(str(write_corpus(tmp_path / "d")), "fr", "en")
    with pytest.raises(DataError, match="give both or neither"):
        resolve_corpus(str(folder), "en", None)


def test_language_pair_inferred_with_english_as_source(tmp_path):
    corpus = resolve_corpus(str(write_corpus(tmp_path / "c", src="vi", tgt="en")), None, None)
    assert (corpus.src, corpus.tgt) == ("en", "vi")


# ----------------------------------------------------------------------------- bad input, as train.py reports it
BAD_DATA = {
    # case: (files written over the good corpus, the one line expected on stderr after "train.py: error: ")
    "invalid UTF-8": ({"train.de": b"ein guter Satz\nnoch einer\nkaputt \xff hier\n"},
                      "{data}/train.de:3: not valid UTF-8 (byte 0xff)"),
    "enormous line": ({"train.en": b"short\n" + b"x" * ((1 << 20) + 1) + b"\n"},
                      "{data}/train.en:2: line of 1,048,577 characters (more than 1,048,576); is this really one "
                      "sentence per line?"),
    "empty split": ({"valid.en": b"", "valid.de": b""}, "{data}/valid.en: the valid split is empty"),
    "missing split": ({"test.de": None}, "--data {data}: missing {data}/test.de (languages found: de, en)"),
    "empty training files": ({"train.en": b"", "train.de": b""}, "{data}/train.en: the file is empty; SentencePiece "
                                                                 "has no text to learn its vocabulary from"),
    "blank training files": ({"train.en": b"\n \n\t\n", "train.de": b"\n\n\n"},
                             "{data}/train.en and {data}/train.de: every line is blank; SentencePiece has no text to "
                             "learn its vocabulary from"),
}


@pytest.mark.parametrize("case", BAD_DATA)
def test_bad_data_stops_train_py_with_one_line_naming_the_file(case, tmp_path, monkeypatch, capsys):
    """What the README promises: one line naming the file (and line), exit status 2, nothing written."""
    changes, expected = BAD_DATA[case]
    data = write_corpus(tmp_path / "corpus")
    for name, content in changes.items():
        (data / name).unlink() if content is None else (data / name).write_bytes(content)
    root, run_dir = tmp_path / "root", tmp_path / "run"
    monkeypatch.setenv("NMT_DATA_ROOT", str(root))
    code = main(["--data", str(data), "--run-dir", str(run_dir), "--vocab-size", "300", "--max-steps", "1"])
    captured = capsys.readouterr()
    assert code == 2 and captured.err == f"train.py: error: {expected.format(data=data)}\n"
    assert not run_dir.exists()  # nothing of a run that could not start
    if case in ("missing split", "empty training files", "blank training files"):
        assert not list(root.rglob("*.model"))  # refused before a tokenizer was trained and cached


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    folder = write_corpus(tmp_path_factory.mktemp("spm") / "c", pairs=[
        (f"Grüße aus Köln, Nummer {i} ({'ÄÖÜß'[i % 4]})", f"greetings from Cologne number {i} – “quoted”")
        for i in range(300)
    ])
    corpus = resolve_corpus(str(folder), "de", "en")
    files = [corpus.file("train", "de"), corpus.file("train", "en")]
    hashes = [corpus.hashes()[str(f)] for f in files]
    settings = spm_settings(600, "unigram", 10_000, seed=1)
    cache = folder.parent / "cache"
    messages = []
    first = train_or_load(files, hashes, cache, settings, log=messages.append)
    second = train_or_load(files, hashes, cache, settings, log=messages.append)
    return first, second, messages, cache


def test_spm_is_cached_and_deterministic(spm_model, tmp_path):
    first, second, messages, cache = spm_model
    assert first == second and "training" in messages[0] and "cached" in messages[1]
    # retrained from scratch with the same settings: the same model bytes
    folder = Path(first).parents[3] / "c"
    files = [folder / "train.de", folder / "train.en"]
    import hashlib

    hashes = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    again = train_or_load(files, hashes, tmp_path / "other", spm_settings(600, "unigram", 10_000, seed=1),
                          log=lambda m: None)
    a, b = Tokenizer(again).sp, Tokenizer(first).sp  # the files differ only in the paths they record
    pieces = lambda sp: [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    assert pieces(a) == pieces(b)


def test_spm_roundtrip_has_no_unknown_pieces(spm_model):
    tok = Tokenizer(spm_model[0])
    lines = ["Grüße aus Köln, Nummer 7 (Ü)", "a character never seen: 漢字 ☃"]
    decoded = tok.decode(tok.encode(lines))
    assert decoded == lines and not any("⁇" in d for d in decoded)
    assert [tok.sp.pad_id(), tok.sp.unk_id(), tok.sp.bos_id(), tok.sp.eos_id()] == [PAD_ID, 1, BOS_ID, EOS_ID]


def test_vocabulary_too_small_for_the_characters(spm_model, tmp_path):
    folder = Path(spm_model[0]).parents[3] / "c"
    with pytest.raises(DataError, match="--vocab-size 100 is too small"):
        train_or_load([folder / "train.de"], ["x"], tmp_path, spm_settings(100, "unigram", 1000, 1), log=lambda m: None)
    assert not list((tmp_path / "spm").iterdir())  # nothing half-written left in the cache


def test_bad_spm_type():
    with pytest.raises(ValueError, match="unigram' or 'bpe"):
        spm_settings(100, "word", 10, 1)


def test_batches_respect_max_tokens_and_cover_every_sentence():
    rng = np.random.default_rng(0)
    src = rng.integers(1, 60, 500)
    tgt = np.maximum(1, (src * rng.normal(1.1, 0.15, 500)).astype(int))  # correlated, as in a translation corpus
    sampler = TokenBatchSampler(src, tgt, max_tokens=256, shuffle=True, seed=3)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for b in batches:
        assert max(max(src[i], tgt[i]) for i in b) * len(b) <= 256
    # length bucketing keeps padding low: real tokens / padded size
    real = sum(int(tgt[i]) for b in batches for i in b)
    padded = sum(max(int(tgt[i]) for i in b) * len(b) for b in batches)
    assert real / padded > 0.9 and sampler.padding()["tgt"] == pytest.approx(real / padded)
    assert sampler.padding()["src"] > 0.9


def test_batch_order_depends_on_seed_and_epoch_only():
    lens = np.arange(1, 301) % 37 + 1
    a, b = TokenBatchSampler(lens, lens, 128, seed=1), TokenBatchSampler(lens, lens, 128, seed=1)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b) and sorted(map(tuple, a)) == sorted(map(tuple, b))  # same batches, new order


def test_ranks_get_disjoint_batches_and_the_same_count():
    lens = np.arange(1, 104) % 23 + 1
    ranks = [TokenBatchSampler(lens, lens, 64, seed=0, num_replicas=3, rank=r) for r in range(3)]
    got = [list(r) for r in ranks]
    assert len({len(g) for g in got}) == 1 and len(got[0]) == len(ranks[0])
    seen = [i for g in got for b in g for i in b]
    assert set(seen) == set(range(103))  # all covered; repeats only from padding the batch count


def test_sentence_longer_than_max_tokens():
    with pytest.raises(ValueError, match="--max-tokens 10 is smaller than one sentence pair"):
        length_batches(np.array([3, 12]), np.array([3, 4]), 10, np.array([0, 1]))


def test_collate_adds_bos_eos_and_pads():
    data = EncodedPairs(EncodedSide.from_lists([[5], [10, 11, 12], [6], [13]]),
                        EncodedSide.from_lists([[5], [20], [6], [21, 22]]), index=[1, 3])
    batch = collate([data[0], data[1]])
    assert batch["id"].tolist() == [1, 3]
    assert batch["src"].tolist() == [[10, 11, 12, EOS_ID], [13, EOS_ID, PAD_ID, PAD_ID]]
    assert batch["tgt_in"].tolist() == [[BOS_ID, 20, PAD_ID], [BOS_ID, 21, 22]]
    assert batch["tgt_out"].tolist() == [[20, EOS_ID, PAD_ID], [21, 22, EOS_ID]]
    assert batch["ntokens"] == 5


def test_corpus_hashes_cover_all_files(tmp_path):
    corpus = Corpus("c", write_corpus(tmp_path / "c"), "en", "de")
    assert len(corpus.hashes()) == 6


# ----------------------------------------------------------------------------- streaming and the encoded cache
def test_streamed_chunks_end_on_line_boundaries_and_number_lines(tmp_path):
    path = tmp_path / "train.de"
    lines = [f"Zeile {i} " + "ä" * (i % 13) for i in range(500)]
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode())  # BOM, CRLF, no final newline
    chunks = list(iter_line_chunks(path, chunk_bytes=64))
    assert len(chunks) > 50 and all(raw.endswith(b"\n") for _, raw in chunks[:-1])
    assert [first for first, _ in chunks] == [1] + [1 + sum(raw.count(b"\n") for _, raw in chunks[:k])
                                                    for k in range(1, len(chunks))]
    assert read_lines(path) == lines


def test_streamed_reader_refuses_an_enormous_line_without_reading_it_all(tmp_path):
    path = tmp_path / "train.en"
    path.write_bytes(b"ok\n" + b"x" * 50_000)
    with pytest.raises(DataError, match=r"train\.en:2: line of more than 1,000 characters"):
        list(iter_line_chunks(path, chunk_bytes=1024, max_line_bytes=1000))


@pytest.fixture(scope="module")
def tokenizer(spm_model):
    return Tokenizer(spm_model[0])


def test_parallel_encoding_equals_serial_and_names_bad_lines(tmp_path, tokenizer, monkeypatch):
    import nmt.data.encoded as encoded

    path = tmp_path / "train.de"
    path.write_text("".join(f"Grüße aus Köln, Nummer {i}\n" if i % 50 else "  \n" for i in range(3000)),
                    encoding="utf-8")
    encode_file(path, tokenizer.model_bytes, tmp_path / "serial", workers=1)
    monkeypatch.setattr(encoded, "_PARALLEL_BYTES", 0)
    monkeypatch.setattr(encoded, "iter_line_chunks", lambda p: iter_line_chunks(p, chunk_bytes=4096))
    assert encode_file(path, tokenizer.model_bytes, tmp_path / "parallel", workers=2) == 3000
    for ext in ("ids", "len", "blank"):
        assert (tmp_path / f"serial.{ext}").read_bytes() == (tmp_path / f"parallel.{ext}").read_bytes()
    side = EncodedSide.load(tmp_path / "parallel")
    assert side.blank.sum() == 60 and tokenizer.decode([side.sentence(7).tolist()]) == ["Grüße aus Köln, Nummer 7"]
    path.write_bytes(path.read_bytes() + b"kaputt \xfe\n")
    with pytest.raises(DataError, match=r"train\.de:3001: not valid UTF-8"):  # raised in a worker, named here
        encode_file(path, tokenizer.model_bytes, tmp_path / "bad", workers=2)


def test_encoded_cache_is_reused_and_never_left_half_written(tmp_path, tokenizer):
    corpus = resolve_corpus(str(write_corpus(tmp_path / "c")), None, None)
    messages = []
    first = load_or_encode(corpus, corpus.hashes(), tokenizer.model_bytes, tmp_path / "cache", log=messages.append)
    again = load_or_encode(corpus, corpus.hashes(), tokenizer.model_bytes, tmp_path / "cache", log=messages.append)
    assert "encoding" in messages[0] and "cached" in messages[1]
    assert np.array_equal(first["test"][1].ids, again["test"][1].ids)
    (corpus.path / "valid.de").write_text("eins\nzwei\n")
    with pytest.raises(DataError, match=r"valid\.en has 60 lines but .*valid\.de has 2"):
        load_or_encode(corpus, corpus.hashes(), tokenizer.model_bytes, tmp_path / "cache", log=messages.append)
    assert len(list((tmp_path / "cache" / "encoded").iterdir())) == 1  # only the complete first cache


def test_training_filter_counts_and_never_touches_valid_or_test(tmp_path, tokenizer):
    pairs = [(f"the house number {i} is small .", f"das Haus Nummer {i} ist klein .") for i in range(40)]
    pairs += [("   ", "leer"), ("blank target", ""), ("word " * 80, "Wort " * 80), ("a", "ein langer Satz " * 2)]
    corpus = resolve_corpus(str(write_corpus(tmp_path / "c", pairs=pairs)), None, None)
    data = TranslationData(corpus, tokenizer, max_tokens=512, max_len=64, seed=1, log=lambda m: None, max_len_ratio=3.0,
                           cache_root=tmp_path / "cache")
    data.setup()
    assert data.filtered == {"blank": 2, "too_long": 1, "ratio": 1, "kept": 40}
    assert len(data.datasets["train"]) == 40 and len(data.datasets["test"]) == 44
    assert data.references("test")[40] == "leer" and data.sources("test")[40] == "   "
    assert data.unknown_in_references("test")["with_unknown"] == 0


def test_large_file_hashes_are_remembered_until_the_file_changes(tmp_path, monkeypatch):
    import hashlib
    import json

    import nmt.data.corpus as corpus_module

    monkeypatch.setenv("NMT_DATA_ROOT", str(tmp_path / "root"))
    monkeypatch.setattr(corpus_module, "_HASH_CACHE_BYTES", 0)
    path = tmp_path / "train.en"
    path.write_text("one\n")
    assert corpus_module.cached_sha256(path) == hashlib.sha256(b"one\n").hexdigest()
    book_path = tmp_path / "root" / "cache" / "sha256.json"
    book = json.loads(book_path.read_text())
    book[str(path.resolve())]["sha256"] = "remembered"
    book_path.write_text(json.dumps(book))
    assert corpus_module.cached_sha256(path) == "remembered"  # unchanged file: not read again
    path.write_text("two lines\nnow\n")
    assert corpus_module.cached_sha256(path) == hashlib.sha256(b"two lines\nnow\n").hexdigest()


def test_fast_cut_for_sorted_sizes_equals_the_greedy_loop():
    from nmt.data.batching import batch_bounds

    rng = np.random.default_rng(5)
    for _ in range(10):
        src, tgt = rng.integers(1, 90, 700), rng.integers(1, 90, 700)
        order = np.lexsort((src, tgt, np.maximum(src, tgt)))  # sizes never decrease: the fast path
        sizes = np.maximum(src, tgt)[order].tolist()
        for bound in (90, 257, 999):
            expected, longest, count = [0], 0, 0  # the sentence-by-sentence greedy cut
            for pos, n in enumerate(sizes):
                if count and max(longest, n) * (count + 1) > bound:
                    expected.append(pos)
                    longest = count = 0
                longest, count = max(longest, n), count + 1
            expected.append(len(sizes))
            assert batch_bounds(src, tgt, bound, order).tolist() == expected

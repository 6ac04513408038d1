"""python -m nmt.bench runs end to end on a tiny corpus: the fields are there and every loop trains on the same tokens.

Speed is never asserted here.
"""

import json
import math

import torch

from nmt import bench
from conftest import synthetic_corpus
from nmt.model import model_config


def _corpus(path):
    return synthetic_corpus(path, 200, 20, 20)


def _args(corpus, *extra):
    return bench.build_parser().parse_args(
        ["--data", str(corpus), "--src", "en", "--tgt", "de", "--decode-data", str(corpus), "--arch", "tiny",
         "--vocab-size", "400", "--max-tokens", "300", "--warmup", "1", "--steps", "1", "--device", "cpu", *extra])


def test_training_rows_same_batches(tmp_path):
    corpus = _corpus(tmp_path / "toy-en-de")
    result = bench.run(_args(corpus, "--only", "train"), log=lambda m: None)
    t = result["training"]
    assert [r["name"] for r in t["rows"]] == ["plain nn.Transformer", "ours", "ours, Lightning Trainer"]
    tokens = {r["tgt_tokens"] for r in t["rows"]}
    assert len(tokens) == 1 and tokens.pop() > 0  # every loop trained on the same non-padding target tokens
    for r in t["rows"]:
        assert r["steps"] == 1 and r["seconds"] > 0 and r["tokens_per_s"] > 0 and r["model_tflops_per_s"] > 0
        assert math.isfinite(r["last_loss"]) and r["mfu"] is None  # no GPU peak on a CPU
        assert "ratio_to_plain" in r and "peak_memory_mb" in r
    assert t["rows"][0]["ratio_to_plain"] == 1.0
    h = result["hardware"]
    assert h["threads"] >= 1 and h["torch"] and h["lightning"] and h["precision"] == "32-true" and h["gpu"] is None
    assert "decoding" not in result
    text = bench.markdown(result)
    assert "| ours, Lightning Trainer |" in text and "vs plain nn.Transformer" in text
    json.dumps(result)  # what --json writes


def test_decoding_rows(tmp_path):
    corpus = _corpus(tmp_path / "toy-en-de")
    out = tmp_path / "bench.json"
    assert bench.main([*_argv(corpus), "--only", "decode", "--decode-lines", "5", "--json", str(out)]) == 0
    d = json.loads(out.read_text())["decoding"]
    assert d["lines"] == 5 and [r["search"] for r in d["rows"]] == ["greedy", "beam 4"]
    assert all(r["sentences_per_s"] > 0 and r["sentences"] == 5 for r in d["rows"])


def _argv(corpus):
    return ["--data", str(corpus), "--src", "en", "--tgt", "de", "--decode-data", str(corpus), "--arch", "tiny",
            "--vocab-size", "400", "--device", "cpu"]


def test_model_flops_is_6n_plus_attention():
    cfg = model_config("tiny", 500)
    d, f, V = cfg.d_model, cfg.d_ff, cfg.vocab_size
    # weights per token: encoder layer 4d² + 2df (12 source tokens); decoder layer 6d² + 2df per target token (10)
    # and the cross-attention K, V projections 2d² per source token; output projection dV per target token
    src, tgt = torch.tensor([5, 7]), torch.tensor([6, 4])
    linear = (cfg.encoder_layers * (4 * d * d + 2 * d * f) * 12
              + cfg.decoder_layers * ((6 * d * d + 2 * d * f) * 10 + 2 * d * d * 12) + d * V * 10)
    attention = (cfg.encoder_layers * 4 * d * (25 + 49)
                 + cfg.decoder_layers * 4 * d * (6 * 7 / 2 + 4 * 5 / 2 + 6 * 5 + 4 * 7))
    assert math.isclose(bench.model_flops(cfg, src, tgt), 6 * linear + 3 * attention)


def test_adam_kernels_train_the_same_model(tmp_path):
    corpus = _corpus(tmp_path / "toy-en-de")
    _, batches = bench.training_batches(str(corpus), 400, 300, 4, src="en", tgt="de")
    cfg = model_config("tiny", 400)
    device = torch.device("cpu")
    fused = bench.bench_ours(cfg, batches, 1, device, "32-true")  # train.py's Adam: fused
    plain = bench.bench_ours(cfg, batches, 1, device, "32-true", fused_adam=False)
    assert (fused.name, plain.name) == ("ours", "ours, multi-tensor Adam") and fused.tokens == plain.tokens
    # the same initialisation, dropout masks and learning rates: only Adam's kernel differs
    assert math.isclose(fused.loss, plain.loss, rel_tol=1e-4)

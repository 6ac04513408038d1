"""The paper presets in configs/: each loads into a valid TrainConfig and holds its source's settings."""

from pathlib import Path

import pytest

from nmt.config import TrainConfig, load_yaml, parse_args
from nmt.model import model_config
from nmt.residual import check_lambda

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHIPPED = sorted(CONFIGS.glob("*.yaml"))


def load(name: str) -> TrainConfig:
    cfg, _, _ = parse_args(["--config", str(CONFIGS / name)])
    return cfg


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_config_is_a_valid_train_config(path):
    cfg = load(path.name)
    assert isinstance(cfg, TrainConfig) and set(load_yaml(path)) <= set(cfg.to_dict())
    check_lambda(cfg.skip, cfg.lam)
    mcfg = model_config(cfg.arch, cfg.vocab_size, dropout=cfg.dropout)
    assert mcfg.d_model % mcfg.n_heads == 0
    assert cfg.max_tokens >= cfg.max_len and cfg.warmup > 0 and cfg.lr > 0 and cfg.max_steps > cfg.warmup
    if cfg.save_every:
        assert cfg.keep_last >= 1
    first = path.read_text().splitlines()[0]
    assert first.startswith("# "), "a preset starts with a comment saying what it is and its source"


@pytest.mark.parametrize("name, d_model, dropout, steps, average", [
    ("wmt14-base.yaml", 512, 0.1, 100_000, 5), ("wmt14-big.yaml", 1024, 0.3, 300_000, 20)])
def test_wmt14_presets_follow_vaswani_et_al(name, d_model, dropout, steps, average):
    cfg = load(name)
    mcfg = model_config(cfg.arch, cfg.vocab_size, dropout=cfg.dropout)
    assert cfg.data == "wmt14-en-de" and (cfg.src, cfg.tgt) == ("en", "de")
    assert (mcfg.d_model, mcfg.encoder_layers, mcfg.decoder_layers, mcfg.dropout) == (d_model, 6, 6, dropout)
    # --lr is the peak of d^-0.5·min(step^-0.5, step·warmup^-1.5), reached at step = warmup
    assert cfg.warmup == 4000 and cfg.lr == pytest.approx(d_model**-0.5 * cfg.warmup**-0.5, rel=0.01)
    assert (list(cfg.adam_betas), cfg.adam_eps, cfg.label_smoothing) == ([0.9, 0.98], 1e-9, 0.1)
    # about 25k target tokens per update, --accumulate derived from them on any number of GPUs
    assert cfg.update_tokens == 25_000 and cfg.accumulate == 1 and cfg.max_tokens == 4096
    assert cfg.max_steps == steps and cfg.keep_last == average and cfg.save_every > 0
    assert (cfg.max_len_a, cfg.max_len_b) == (1.0, 50)  # output length ≤ input length + 50
    text = (CONFIGS / name).read_text()
    assert "Vaswani et al. 2017" in text and f"--average-last {average} --beam 4 --lenpen 0.6" in text


def test_iwslt_preset_names_its_choices():
    cfg = load("iwslt15-en-vi.yaml")
    assert cfg.data == "iwslt15-en-vi" and (cfg.src, cfg.tgt) == ("en", "vi")
    assert model_config(cfg.arch, cfg.vocab_size).encoder_layers == 6
    assert "our own choice" in (CONFIGS / "iwslt15-en-vi.yaml").read_text()


@pytest.mark.parametrize("name", ["multi30k.yaml", "wmt-news.yaml"])
def test_cpu_study_presets_have_the_papers_depth_and_log_layer_gradients(name):
    cfg = load(name)
    mcfg = model_config(cfg.arch, cfg.vocab_size)
    assert (mcfg.encoder_layers, mcfg.decoder_layers) == (6, 6) and mcfg.d_model < 512
    assert cfg.log_layer_grads > 0 and cfg.skip == "post_ln"  # the sweep sets --skip per run

"""Defaults < YAML preset < flags, validation of presets, and what --resume may change."""

from pathlib import Path

import pytest

from nmt.config import (
    ConfigError,
    TrainConfig,
    build_parser,
    load_yaml,
    merge_for_resume,
    parse_args,
    read_saved_config,
    save_config,
)

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def test_flags_override_preset_which_overrides_defaults(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("arch: base\nlr: 0.0007\nwarmup: 4000\nlambda: 2\nskip: rskip_ln\n")
    cfg, explicit, _ = parse_args(["--config", str(preset), "--warmup", "8000"])
    assert (cfg.arch, cfg.lr, cfg.warmup, cfg.lam, cfg.skip) == ("base", 0.0007, 8000, 2.0, "rskip_ln")
    assert cfg.max_tokens == TrainConfig().max_tokens  # untouched default
    assert explicit["warmup"] == 8000 and "max_tokens" not in explicit


def test_lambda_flag_and_types():
    cfg, _, _ = parse_args(["--skip", "rskip_ln", "--lambda", "2", "--adam-betas", "0.9", "0.997"])
    assert cfg.lam == 2.0 and cfg.adam_betas == [0.9, 0.997]


def test_help_documents_every_field(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ("--lambda", "--skip", "--max-tokens", "--resume", "--precision", "--run-dir", "--accelerator"):
        assert flag in text


def test_unknown_preset_key_names_file(tmp_path):
    preset = tmp_path / "bad.yaml"
    preset.write_text("lr: 0.001\nlearning_rate: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown option\(s\) learning_rate"):
        load_yaml(preset)


def test_invalid_yaml_names_line(tmp_path):
    preset = tmp_path / "broken.yaml"
    preset.write_text("lr: 0.001\narch: [small\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml:\d+: not valid YAML"):
        load_yaml(preset)


def test_wrong_type_in_preset(tmp_path):
    preset = tmp_path / "t.yaml"
    preset.write_text("max_tokens: lots\n")
    with pytest.raises(ConfigError, match="max_tokens must be int"):
        parse_args(["--config", str(preset)])


def test_invalid_choice_in_preset_names_file(tmp_path):
    preset = tmp_path / "c.yaml"
    preset.write_text("arch: huge\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: arch must be one of tiny, narrow, small, base, big, got 'huge'"):
        parse_args(["--config", str(preset)])


def test_saved_config_roundtrip(tmp_path):
    cfg = TrainConfig(skip="xskip_ln", lam=0.5, arch="tiny", src="en", tgt="de")
    save_config(cfg, tmp_path / "config.yaml")
    assert read_saved_config(tmp_path / "config.yaml") == TrainConfig(**cfg.to_dict())


def test_resume_may_raise_max_steps_but_not_change_the_model():
    saved = TrainConfig(skip="rskip_ln", lam=2, arch="tiny", max_steps=100)
    merged = merge_for_resume(saved, {"max_steps": 300, "skip": "rskip_ln"})
    assert merged.max_steps == 300 and merged.skip == "rskip_ln"
    with pytest.raises(ConfigError, match=r"--skip: run has 'rskip_ln', asked 'post_ln'.*--arch: run has 'tiny'"):
        merge_for_resume(saved, {"skip": "post_ln", "arch": "small"})


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_presets_load(path):
    cfg, _, _ = parse_args(["--config", str(path)])
    assert isinstance(cfg, TrainConfig)
    assert "#" in path.read_text().splitlines()[0], "a preset starts with a comment saying what it is and its source"


def test_there_are_presets():
    assert {"toy.yaml", "multi30k.yaml"} <= {p.name for p in CONFIGS}


def test_no_download_is_a_switch_that_resume_may_change(tmp_path):
    assert parse_args([])[0].no_download is False
    cfg, explicit, _ = parse_args(["--no-download"])
    assert cfg.no_download is True and explicit == {"no_download": True}
    preset = tmp_path / "p.yaml"
    preset.write_text("no_download: true\n")
    assert parse_args(["--config", str(preset)])[0].no_download is True
    preset.write_text("no_download: 1\n")
    with pytest.raises(ConfigError, match=r"p\.yaml: no_download must be bool, got 1"):
        parse_args(["--config", str(preset)])
    # it says where the data may come from, not what is trained
    assert merge_for_resume(TrainConfig(), {"no_download": True}).no_download is True
    save_config(cfg, tmp_path / "config.yaml")
    assert read_saved_config(tmp_path / "config.yaml").no_download is True

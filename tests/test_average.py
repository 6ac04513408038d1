"""nmt.average: averaging of hand-made Lightning-style checkpoints, the periodic-checkpoint finder, the CLI."""

from pathlib import Path

import pytest
import torch

from nmt.average import AverageError, average_checkpoints, last_checkpoints, main

MODEL = {"d_model": 4, "layers": 1, "skip": "rskip_ln"}


def make_ckpt(step: int, scale: float, model=None, **state_changes) -> dict:
    """A small checkpoint shaped like Lightning's, with float (fp32, fp16) and int/bool tensors."""
    state = {
        "model.w": torch.arange(6, dtype=torch.float32).reshape(2, 3) * scale,
        "model.half": torch.full((3,), scale, dtype=torch.float16),
        "model.positions": torch.arange(5),  # int64
        "model.mask": torch.tensor([True, False]),
    }
    state.update(state_changes)
    return {
        "state_dict": state,
        "hyper_parameters": {"model": dict(model or MODEL), "optim": {"lr": 1e-3 * step}},
        "global_step": step,
        "epoch": step // 100,
        "optimizer_states": [{"state": {}}],
        "lr_schedulers": [{"last_epoch": step}],
        "spm_model": b"tokenizer-bytes",
    }


def save(tmp_path: Path, name: str, ckpt: dict) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


@pytest.fixture
def three(tmp_path):
    return [save(tmp_path, f"c{s}.ckpt", make_ckpt(s, k)) for s, k in [(100, 1.0), (300, 2.0), (200, 6.0)]]


def test_average_is_the_mean(three):
    avg = average_checkpoints(three)
    w = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    assert torch.allclose(avg["state_dict"]["model.w"], w * 3.0)  # (1 + 2 + 6) / 3
    assert avg["state_dict"]["model.w"].dtype == torch.float32
    assert avg["state_dict"]["model.half"].dtype == torch.float16
    assert torch.equal(avg["state_dict"]["model.half"], torch.full((3,), 3.0, dtype=torch.float16))
    assert torch.equal(avg["state_dict"]["model.positions"], torch.arange(5))
    assert torch.equal(avg["state_dict"]["model.mask"], torch.tensor([True, False]))
    # the newest (highest global_step, 300) gives the other entries; training state is dropped
    assert avg["global_step"] == 300 and avg["epoch"] == 3
    assert avg["hyper_parameters"]["optim"]["lr"] == pytest.approx(0.3)
    assert avg["spm_model"] == b"tokenizer-bytes"
    assert "optimizer_states" not in avg and "lr_schedulers" not in avg
    assert avg["averaged_from"] == [str(p) for p in three]


def test_average_accumulates_in_float64(tmp_path):
    # in float32, 2**24 + 1 rounds back to 2**24: a float32 sum would give 5592405.5, float64 the exact mean
    values = [2.0**24, 1.0, 1.0]
    paths = [save(tmp_path, f"h{i}.ckpt", make_ckpt(i, 1.0, **{"model.big": torch.tensor([v])}))
             for i, v in enumerate(values)]
    mean = average_checkpoints(paths)["state_dict"]["model.big"]
    assert mean.dtype == torch.float32 and mean.item() == (2**24 + 2) / 3 == 5592406


def test_ints_must_match(tmp_path, three):
    other = save(tmp_path, "other.ckpt", make_ckpt(400, 1.0, **{"model.positions": torch.arange(5) + 1}))
    with pytest.raises(AverageError, match=r"c100\.ckpt and .*other\.ckpt differ in state_dict\['model\.positions'\]"):
        average_checkpoints([three[0], other])


def test_mismatched_keys_shapes_models(tmp_path, three):
    extra = make_ckpt(400, 1.0)
    extra["state_dict"]["model.extra"] = torch.zeros(2)
    with pytest.raises(AverageError, match=r"'model\.extra' is in .*extra\.ckpt but not in .*c100\.ckpt"):
        average_checkpoints([three[0], save(tmp_path, "extra.ckpt", extra)])

    wide = save(tmp_path, "wide.ckpt", make_ckpt(400, 1.0, **{"model.w": torch.zeros(2, 4)}))
    shape = r"c100\.ckpt and .*wide\.ckpt .*'model\.w'\] has shape \(2, 3\) vs \(2, 4\)"
    with pytest.raises(AverageError, match=shape):
        average_checkpoints([three[0], wide])

    other_model = save(tmp_path, "big.ckpt", make_ckpt(400, 1.0, model={**MODEL, "layers": 6}))
    with pytest.raises(AverageError, match=r"c100\.ckpt and .*big\.ckpt are different models: .*'layers'\]: 1 vs 6"):
        average_checkpoints([three[0], other_model])


def test_last_checkpoints_sorts_numerically(tmp_path):
    run = tmp_path / "run"
    for step in [900, 1000, 100, 1100]:
        save(run, f"checkpoints/step-{step}.ckpt", make_ckpt(step, 1.0))
    save(run, "checkpoints/last.ckpt", make_ckpt(1100, 1.0))
    save(run, "checkpoints/best.ckpt", make_ckpt(900, 1.0))
    names = [p.name for p in last_checkpoints(run, 3)]
    assert names == ["step-900.ckpt", "step-1000.ckpt", "step-1100.ckpt"]
    with pytest.raises(AverageError, match=r"found 4 periodic checkpoint.*need 5"):
        last_checkpoints(run, 5)
    with pytest.raises(AverageError, match="no checkpoints/ folder"):
        last_checkpoints(tmp_path / "nowhere", 1)


def test_cli_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    for step, k in [(900, 1.0), (1000, 2.0), (1100, 4.0)]:
        save(run, f"checkpoints/step-{step}.ckpt", make_ckpt(step, k))
    out = tmp_path / "avg.ckpt"
    assert main(["--run", str(run), "--last", "2", "--output", str(out)]) == 0
    avg = torch.load(out, map_location="cpu", weights_only=False)
    assert torch.allclose(avg["state_dict"]["model.w"], torch.arange(6.0).reshape(2, 3) * 3.0)  # (2 + 4) / 2
    assert avg["global_step"] == 1100
    assert [Path(p).name for p in avg["averaged_from"]] == ["step-1000.ckpt", "step-1100.ckpt"]

    files = sorted((run / "checkpoints").glob("step-*.ckpt"))
    assert main([*map(str, files), "--output", str(out)]) == 0
    avg = torch.load(out, map_location="cpu", weights_only=False)
    assert torch.allclose(avg["state_dict"]["model.w"], torch.arange(6.0).reshape(2, 3) * 7 / 3)
    assert not list(tmp_path.glob(".avg.ckpt.*"))  # no temporary file left over


def test_cli_errors(tmp_path, capsys):
    good = [save(tmp_path, f"g{s}.ckpt", make_ckpt(s, 1.0)) for s in (1, 2)]
    out = tmp_path / "avg.ckpt"

    broken = tmp_path / "broken.ckpt"
    data = good[0].read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    assert main([str(good[0]), str(broken), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"checkpoint {broken} is unreadable, truncated or corrupt" in err
    assert "Traceback" not in err

    assert main([str(good[0]), str(tmp_path / "missing.ckpt"), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"checkpoint {tmp_path / 'missing.ckpt'} is missing" in err

    big = save(tmp_path, "big.ckpt", make_ckpt(3, 1.0, model={**MODEL, "d_model": 8}))
    assert main([str(good[0]), str(big), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "different models" in err and "'d_model'" in err

    assert main(["--run", str(tmp_path / "none"), "--last", "2", "--output", str(out)]) == 2
    assert capsys.readouterr().err.count("\n") == 1

    assert main([str(good[0]), str(good[1]), "--output", str(good[1])]) == 2  # would overwrite an input
    assert "one of the checkpoints" in capsys.readouterr().err
    assert not out.exists()

    with pytest.raises(SystemExit) as e:  # usage errors: argparse's exit status 2
        main([str(good[0]), "--run", str(tmp_path), "--last", "1", "--output", str(out)])
    assert e.value.code == 2

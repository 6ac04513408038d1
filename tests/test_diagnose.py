"""``python -m nmt.diagnose``: each measurement on a case whose answer is known, and the command end to end for every
registered residual variant."""

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT

from nmt.diagnose import measures
from nmt.diagnose.cli import main
from nmt.diagnose.diagnosis import FIGURES, logged_layer_gradients
from nmt.diagnose.probes import lesioned
from nmt.diagnose.subject import load_subject
from nmt.metrics import sacrebleu_score
from nmt.model import Transformer, model_config
from nmt.residual import RESIDUALS

TESTS = Path(__file__).resolve().parent
V = 50
EVERY_VARIANT = [(name, {"one": 1, "positive": 2, "integer": 2}[cls.lambda_rule]) for name, cls in RESIDUALS.items()]


def model(skip="post_ln", lam=1.0, layers=2):
    """A tiny model (d 64) at initialisation."""
    torch.manual_seed(0)
    return Transformer(model_config("tiny", V, skip=skip, lam=lam, dropout=0.0, encoder_layers=layers,
                                    decoder_layers=layers)).eval()


def batch(sentences=8, src_len=12, tgt_len=10, seed=0):
    """Random tokens, the last sentence with two padded source positions and one padded target position."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, V, (sentences, src_len), generator=g)
    tgt = torch.randint(4, V, (sentences, tgt_len + 1), generator=g)
    src[-1, -2:] = 0
    tgt_in, tgt_out = tgt[:, :-1].clone(), tgt[:, 1:].clone()
    tgt_in[-1, -1] = tgt_out[-1, -1] = 0
    return {"src": src, "tgt_in": tgt_in, "tgt_out": tgt_out, "ntokens": int((tgt_out != 0).sum())}


@pytest.fixture
def blocks_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))  # for --skip plain_block:PlainLN


# ------------------------------------------------------------------------------------------- 4. lesions
def test_deleting_a_sublayer_whose_output_is_zero_leaves_bleu_unchanged(toy_runs, monkeypatch):
    runs, base = toy_runs
    monkeypatch.setenv("NMT_DATA_ROOT", str(base / "data"))  # the toy corpus the runs trained on
    subject = load_subject(runs["post_ln"][0], limit=40)
    pairs = subject.model.residual_pairs()
    with torch.no_grad():  # this sublayer now outputs zeros: its residual branch F(x) is 0 already
        for p in pairs[2][1].out_proj.parameters():
            p.zero_()
    translator = subject.translator()
    result = measures.lesion_study(subject.model, lambda lines: translator.translate(lines, beam=1),
                                   lambda hyps: sacrebleu_score(hyps, subject.references)["score"], subject.sources,
                                   max_k=2, draws=2, seed=1)
    single = {s["sublayer"]: s["bleu"] for s in result["single"]}
    assert list(single)[:3] == ["encoder L1 self_attn", "encoder L1 ff", "encoder L2 self_attn"]
    assert len(single) == 2 * 2 + 2 * 3  # every sublayer of the 2+2 layers, in the order they compute
    assert result["intact"] > 5
    assert single["encoder L2 self_attn"] == result["intact"]
    assert sum(b != result["intact"] for b in single.values()) >= 5  # deleting a working sublayer is seen
    assert [b["k"] for b in result["by_k"]] == [0, 1, 2] and [len(d["sublayers"]) for d in result["random"]] == [2, 2]
    assert translator.translate(subject.sources[:5], beam=1) == translator.translate(subject.sources[:5], beam=1)


def test_lesions_of_rezero_at_initialisation_change_nothing():
    """Every ReZero block is the identity at initialisation (α = 0): deleting any set of its sublayers is no change."""
    net, b = model("rezero"), batch()
    intact = net(b["src"], b["tgt_in"])
    with lesioned([block for block, _ in net.residual_pairs()]):
        assert torch.equal(net(b["src"], b["tgt_in"]), intact)
    post = model("post_ln")
    intact = post(b["src"], b["tgt_in"])
    with lesioned([post.residual_pairs()[0][0]]):
        assert not torch.allclose(post(b["src"], b["tgt_in"]), intact)
    assert torch.equal(post(b["src"], b["tgt_in"]), intact)  # and the hook is gone afterwards


# ---------------------------------------------------------------------------------------- 5. similarity
def test_linear_cka_is_one_for_the_same_representation_up_to_rotation_and_scale():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 16, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))
    assert measures.linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert measures.linear_cka(x, 3.7 * x @ q) == pytest.approx(1.0, abs=1e-12)
    assert measures.linear_cka(x, x @ q + 5.0) == pytest.approx(1.0, abs=1e-12)  # a shift is centred away
    stretched = x * torch.linspace(0.1, 3, 16, dtype=torch.float64)  # not isotropic: another representation
    assert measures.linear_cka(x, stretched) < 0.95
    assert measures.linear_cka(x, torch.randn(300, 16, generator=g, dtype=torch.float64)) < 0.15


def test_every_layer_is_most_similar_to_itself():
    _, similarity = measures.hidden_states_and_similarity(model("pre_ln", layers=3), [batch()])
    for side, layers in (("encoder", 3), ("decoder", 3)):
        cka = similarity[side]["cka"]
        assert similarity[side]["labels"] == ["embedding", "layer 1", "layer 2", "layer 3"]
        assert all(cka[i][i] == pytest.approx(1.0) for i in range(layers + 1))
        assert all(cka[i][j] == pytest.approx(cka[j][i]) and cka[i][j] < 1 - 1e-6
                   for i in range(layers + 1) for j in range(layers + 1) if i != j)
    assert similarity["encoder"]["tokens"] == 8 * 12 - 2 and similarity["decoder"]["tokens"] == 8 * 10 - 1


# -------------------------------------------------------------------------------------- 2. hidden states
def test_pre_ln_hidden_states_grow_with_depth_and_post_ln_stay_at_one():
    rms = {skip: measures.hidden_states_and_similarity(model(skip, layers=6), [batch()])[0] for skip in
           ("pre_ln", "post_ln")}
    for side in ("encoder", "decoder"):
        pre = [p["rms"][0] for p in rms["pre_ln"][side][1:-1]]
        post = [p["rms"][0] for p in rms["post_ln"][side][1:-1]]
        assert len(pre) == (12 if side == "encoder" else 18)
        # grows at (nearly) every sublayer; over 6 layers ×1.33 (encoder) and ×1.92 (decoder) with fairseq's
        # initialisation (the default), ×1.77 and ×2.07 with --init xavier, whose feed-forward W₂ is twice as large
        assert pre[-1] > 1.25 * pre[0] and sum(b > a for a, b in itertools.pairwise(pre)) >= 0.8 * (len(pre) - 1)
        assert all(v == pytest.approx(1.0, abs=0.01) for v in post)  # LN(·) with γ = 1, β = 0
        assert rms["pre_ln"][side][-1]["rms"][0] == pytest.approx(1.0, abs=0.01)  # the final LayerNorm
        assert rms["pre_ln"][side][0]["label"] == "embedding" and rms["pre_ln"][side][-1]["label"] == "output"


def test_every_stream_of_a_multi_stream_state_is_measured():
    hyper = measures.hidden_states_and_similarity(model("hyper", lam=3), [batch()])[0]
    assert all(len(p["rms"]) == 3 and p["streams"] == ["stream 0", "stream 1", "stream 2"]
               for p in hyper["encoder"][1:-1])
    dual = measures.hidden_states_and_similarity(model("resi_dual"), [batch()])[0]
    points = dual["decoder"][1:-1]
    assert points[0]["streams"] == ["x_a (Post-LN)", "x_d (sum)"]
    assert all(p["rms"][0] == pytest.approx(1.0, abs=0.01) for p in points)  # the Post-LN stream
    assert points[-1]["rms"][1] > points[0]["rms"][1]  # the un-normalised sum grows


# -------------------------------------------------------------------------------------- 1. gradient flow
def test_gradient_flow_sees_where_the_gradient_cannot_go():
    # ReZero at initialisation: every cross-attention is multiplied by α = 0, so the loss does not depend on the
    # encoder at all and no gradient reaches it
    flow = measures.gradient_flow(model("rezero"), [batch()], 0.1)
    assert flow["encoder"] == [0.0, 0.0] and min(flow["decoder"]) > 0
    # Post-LN's gradient shrinks towards the bottom of the decoder, Pre-LN's does not (Xiong et al. 2020)
    post, pre = (measures.gradient_flow(model(skip, layers=6), [batch()], 0.1)["decoder"] for skip in ("post_ln", "pre_ln"))
    assert post[0] / post[-1] < 0.5 and pre[0] / pre[-1] > 1


def test_logged_layer_gradients_are_read_from_metrics_csv(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text("epoch,grad_norm/decoder.0,grad_norm/decoder.1,grad_norm/encoder.0,grad_norm/encoder.1,"
                   "grad_norm/encoder.10,step,train/loss\n"
                   "0,1.5,2.5,0.5,0.25,0.125,1,\n0,,,,,,2,9.0\n0,3,4,1,2,inf,3,\n")
    logged = logged_layer_gradients(csv)
    assert logged["steps"] == [1, 3]
    assert logged["encoder"] == [[0.5, 1.0], [0.25, 2.0], [0.125, None]]  # layer 10 after layer 1
    assert logged["decoder"] == [[1.5, 3.0], [2.5, 4.0]]
    csv.write_text("epoch,step,train/loss\n0,1,9.0\n")
    assert logged_layer_gradients(csv) is None


# ------------------------------------------------------------------------------------ 3. shattered gradients
def test_a_network_without_skips_has_less_correlated_gradients(blocks_on_path):
    scales = [0.03, 0.1, 0.3, 1.0]
    found = {skip: measures.shattered_gradients(model(skip, layers=6), [batch()], 0.1, scales, lags=3, seed=1)
             for skip in ("post_ln", "plain_block:PlainLN")}
    with_skip, without = found["post_ln"]["perturbation"], found["plain_block:PlainLN"]["perturbation"]
    assert with_skip[0] > 0.95  # smooth: a small perturbation barely changes the gradient
    assert all(a > b for a, b in zip(with_skip, without)), found
    assert sum(with_skip) - sum(without) > 0.3
    assert all(-1 <= v <= 1 for v in found["post_ln"]["along_sentence"]) and len(found["post_ln"]["along_sentence"]) == 3


def test_gradient_correlation_is_one_without_perturbation_and_for_a_linear_function():
    x = torch.randn(4, 6, 8, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(4, 6, dtype=torch.bool)
    w = torch.randn(8, generator=torch.Generator().manual_seed(1))
    linear = measures.gradient_correlations(lambda z: (z @ w).sum(), x, mask, [0.5, 5.0], 2, torch.Generator())
    assert linear["perturbation"] == [pytest.approx(1.0), pytest.approx(1.0)]  # its gradient is w everywhere
    assert linear["along_sentence"] == [pytest.approx(1.0), pytest.approx(1.0)]
    wiggly = measures.gradient_correlations(lambda z: torch.sin(40 * z).sum(), x, mask, [1e-6, 1.0], 1,
                                            torch.Generator().manual_seed(0))
    assert wiggly["perturbation"][0] == pytest.approx(1.0, abs=1e-3) and abs(wiggly["perturbation"][1]) < 0.2


# ---------------------------------------------------------------------------------------- the command
def run_of(toy_runs, tmp_path, skip, lam):
    """A run directory with the toy post_ln run's tokenizer and configuration, but ``skip`` and ``lam``."""
    source = toy_runs[0]["post_ln"][0]
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(source / "spm.model", run / "spm.model")
    cfg = yaml.safe_load((source / "config.yaml").read_text())
    cfg.update(skip=skip, lam=lam)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return run


FAST = ["--batches", "1", "--limit", "12", "--max-k", "2", "--draws", "1", "--lags", "2", "--scales", "0.1", "1"]


@pytest.mark.parametrize("skip,lam", EVERY_VARIANT)
def test_every_variant_is_diagnosed_at_initialisation(toy_runs, tmp_path, monkeypatch, skip, lam):
    monkeypatch.setenv("NMT_DATA_ROOT", str(toy_runs[1] / "data"))
    run = run_of(toy_runs, tmp_path, skip, lam)
    assert main([str(run), "--init", *FAST]) == 0
    out = run / "diagnosis-init"
    result = json.loads((out / "diagnosis.json").read_text())
    assert result["subject"]["skip"] == skip and result["subject"]["step"] == 0
    assert len(result["lesion"]["single"]) == 10 and [b["k"] for b in result["lesion"]["by_k"]] == [0, 1, 2]
    assert len(result["gradient_flow"]["encoder"]) == 2 and len(result["hidden_states"]["decoder"]) == 6 + 2
    assert result["shattered_gradients"]["scales"] == [0.1, 1.0]
    assert len(result["similarity"]["encoder"]["cka"]) == 3
    assert "# Diagnosis: " in (out / "summary.md").read_text()
    pytest.importorskip("matplotlib")
    assert all((out / name).stat().st_size > 5000 for name in FIGURES)


def test_the_command_on_a_trained_checkpoint(toy_runs, tmp_path):
    runs, base = toy_runs
    ckpt = runs["rskip_ln"][0] / "checkpoints" / "best.ckpt"
    env = {**os.environ, "NMT_DATA_ROOT": str(base / "data"), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "nmt.diagnose", str(ckpt), "--out", str(tmp_path / "d"), *FAST],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "diagnosis written to" in done.stdout
    result = json.loads((tmp_path / "d" / "diagnosis.json").read_text())
    assert result["subject"]["label"] == "rskip_ln λ=2" and result["subject"]["step"] == 500
    assert result["lesion"]["intact"] > 5  # a trained model translates
    bad = subprocess.run([sys.executable, "-m", "nmt.diagnose", str(tmp_path / "nothing")], env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "nothing" in bad.stderr


def test_the_cache_key_does_not_depend_on_how_the_checkpoint_path_is_spelled(tmp_path, monkeypatch):
    from nmt.diagnose.diagnosis import cache_key
    from nmt.diagnose.settings import DiagnosisSettings

    checkpoint = tmp_path / "study" / "runs" / "post_ln-lambda1-seed1" / "checkpoints" / "best.ckpt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"weights")
    monkeypatch.chdir(tmp_path)
    settings = DiagnosisSettings()
    relative = cache_key(Path("study/runs/post_ln-lambda1-seed1/checkpoints/best.ckpt"), settings)
    assert relative == cache_key(checkpoint, settings)  # a study reported from another folder: the same diagnosis
    checkpoint.write_bytes(b"other weights")  # a new best checkpoint: diagnosed again
    assert cache_key(checkpoint, settings) != relative
    assert cache_key(checkpoint, DiagnosisSettings(limit=50)) != cache_key(checkpoint, settings)


def test_an_exploded_models_gradient_is_marked_off_scale_not_squeezing_the_others(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from nmt.diagnose import figures
    from nmt.plotting import pyplot

    drawn = []
    monkeypatch.setattr(figures, "_save", lambda plt, fig, path: drawn.append(fig) or path.name)
    healthy = {"encoder": [0.2, 0.1, 0.3], "decoder": [0.4, 0.2, 0.7]}
    exploded = {"encoder": [None, None, None], "decoder": [None, None, 2.8e18]}  # None: not finite
    results = [{"subject": {"label": label, "batches": 4, "step": 100}, "gradient_flow": flow}
               for label, flow in (("post_ln", healthy), ("xskip λ=2", exploded))]
    plt = pyplot()
    figures.gradient_flow(plt, results, {"post_ln": "tab:blue", "xskip λ=2": "tab:purple"}, tmp_path / "g.png")
    ax = drawn[0].axes[0]
    low, high = ax.get_ylim()
    assert 0.1 > low and 0.7 < high < 100  # the healthy curves fill the axis
    assert [t.get_text() for t in ax.texts] == ["2.8e+18 (off scale)"]
    marks = [(line.get_marker(), tuple(line.get_xydata()[0])) for line in ax.lines if line.get_marker() in "^x"]
    assert ("^", (3.0, high)) in marks  # on the top edge, at layer 3
    assert sum(m == "x" for m, _ in marks) == 5 and all(y == low for m, (_, y) in marks if m == "x")
    assert "not finite" in ax.get_title()
    plt.close("all")

"""The designs after rSkip+LN, each against its formula and its initialisation rule, computed here with plain
tensor arithmetic (the sublayers are fixed functions, or the model's own attention and feed-forward modules
used as black boxes); the stack interface (place, stack ends, several streams); and a few training updates of
``train.py --skip NAME`` for every registered variant."""

import math

import pytest
import torch
from conftest import metrics
from test_data import write_corpus
from test_residual import Affine, D, layer_norm, randomize_norms
from torch import nn

from nmt.model import Transformer, model_config
from nmt.residual import (
    RESIDUALS,
    BadLambda,
    Place,
    UnknownVariant,
    build_residual,
    build_stack_ends,
    check_lambda,
    residual_class,
    same_model,
)
from nmt.train import main

V, PAD = 40, 0


def place(side="encoder", layer=0, sublayer="self_attn", n=6, m=6):
    return Place(side, layer, sublayer, n, m)


def make(name, lam=1, where=None, seed=1):
    block = build_residual(name, D, lam=lam, place=where or place()).double().eval()
    return randomize_norms(block, seed)


def randomize(block, seed=2, skip=()):
    """Every parameter that is not a LayerNorm's: random (so that the test sees which one is used where)."""
    g = torch.Generator().manual_seed(seed)
    norms = {id(p) for m in block.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()}
    with torch.no_grad():
        for name, p in block.named_parameters():
            if id(p) not in norms and name not in skip:
                p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return block


def norms(block):
    return [m for m in block.modules() if isinstance(m, nn.LayerNorm)]


def ln(x, norm):
    return layer_norm(x, norm.weight, norm.bias)


@pytest.fixture
def x():
    return torch.randn(3, 5, D, generator=torch.Generator().manual_seed(42), dtype=torch.float64)


def tokens(*shape, seed=0):
    return torch.randint(4, V, shape, generator=torch.Generator().manual_seed(seed))


def tiny(skip, lam=1, seed=0, **kw):
    torch.manual_seed(seed)
    return Transformer(model_config("tiny", V, skip=skip, lam=lam, dropout=0.0, **kw)).eval()


# ------------------------------------------------------------------------------------------------ place
def test_place_knows_its_position_in_the_stack():
    first, last = place("decoder", 0, "self_attn", 4, 3), place("decoder", 2, "ff", 4, 3)
    assert (first.index, first.depth, first.layers, first.sublayers_per_layer) == (0, 0, 3, 3)
    assert first.is_first_in_layer and first.is_first_in_stack and not first.is_last_in_layer
    assert (last.index, last.depth) == (2, 8) and last.is_last_in_layer and last.is_last_in_stack
    cross = place("decoder", 1, "cross_attn", 4, 3)
    assert cross.index == 1 and not (cross.is_first_in_layer or cross.is_last_in_layer or cross.is_last_in_stack)
    enc = place("encoder", 3, "ff", 4, 3)
    assert enc.depth == 7 and enc.is_last_in_stack and enc.layers == 4
    for bad in (("encoder", 0, "cross_attn"), ("middle", 0, "ff"), ("encoder", 4, "ff")):
        with pytest.raises(ValueError):
            Place(*bad, 4, 3)


def test_every_block_in_a_model_knows_its_place():
    model = tiny("post_ln", encoder_layers=3, decoder_layers=2)
    places = [block.place for block, _ in model.residual_pairs()]
    assert [(p.side, p.layer, p.sublayer) for p in places] == [
        ("encoder", i, s) for i in range(3) for s in ("self_attn", "ff")] + [
        ("decoder", i, s) for i in range(2) for s in ("self_attn", "cross_attn", "ff")]
    assert all((p.encoder_layers, p.decoder_layers) == (3, 2) for p in places)


def test_a_block_with_the_older_constructor_still_works(x):
    class OldStyle(nn.Module):
        """y = x + F(x), built as (d_model, lam, dropout)"""

        final_norm = True

        def __init__(self, d_model, lam=1.0, dropout=0.0):
            super().__init__()
            self.norm = nn.LayerNorm(d_model)

        def forward(self, x, sublayer):
            return x + sublayer(self.norm(x))

    import test_variants

    test_variants.OldStyle = OldStyle
    try:
        block = build_residual(f"{__name__}:OldStyle", D, place=place())
        assert block.place == place()
        model = Transformer(model_config("tiny", V, skip=f"{__name__}:OldStyle"))
        assert len(norms(model.encoder.ends)) == 1  # its final_norm declaration is read
        assert model(tokens(2, 5), tokens(2, 4)).shape == (2, 4, V)
    finally:
        del test_variants.OldStyle


def test_errors_are_typed_with_their_fields():
    with pytest.raises(UnknownVariant) as e:
        residual_class("nope")
    assert e.value.name == "nope" and "rezero" in str(e.value)
    with pytest.raises(BadLambda) as e:
        check_lambda("rezero", 2)
    assert (e.value.variant, e.value.lam) == ("rezero", 2) and "has no λ" in e.value.reason
    assert "'hyper'" in str(e.value) and "'hyper'" not in e.value.reason  # the hint suggests variants with a λ
    for name in ("hyper", "hyper_static"):
        with pytest.raises(BadLambda, match="integer λ ≥ 1 \\(the expansion rate n"):
            build_residual(name, D, lam=1.5, place=place())
        assert check_lambda(name, 3.0) == 3
    with pytest.raises(ValueError, match="place=Place"):
        build_residual("deepnorm", D)


def test_identical_models_are_declared_by_the_classes():
    assert same_model("xskip", 1) == "skip" and same_model("xskip_ln", 1.0) == "post_ln"
    assert same_model("rskip_ln", 1) == "post_ln" and same_model("rskip_ln", 2) is None
    assert all(same_model(name, 1) is None for name in ("rezero", "deepnorm", "hyper", "hyper_static", "post_ln"))


@pytest.mark.parametrize("name", list(RESIDUALS))
def test_every_variant_calls_its_sublayer_once_and_keeps_its_state_shape(name, x):
    lam = 2 if residual_class(name).lambda_rule != "one" else 1
    for where in (place("encoder", 0, "self_attn"), place("decoder", 1, "ff")):
        ends = build_stack_ends(name, D, lam).double()
        state = ends.begin(x)
        F = Affine()
        new = make(name, lam, where)(state, F)
        assert F.calls == 1 and F.inputs[0].shape == x.shape
        assert type(new) is type(state) and [t.shape for t in _tensors(new)] == [t.shape for t in _tensors(state)]
        assert ends.end(new).shape == x.shape


def _tensors(state):
    return list(state) if isinstance(state, tuple) else [state]


# ---------------------------------------------------------------------------------------------- ReZero
def test_rezero(x):
    F, block = Affine(), make("rezero")
    assert norms(block) == [] and block.alpha.tolist() == [0.0]
    torch.testing.assert_close(block(x, F), x, rtol=0, atol=0)  # the identity at initialisation
    randomize(block)
    torch.testing.assert_close(block(x, F), x + block.alpha * F(x))


def test_rezero_model_is_the_identity_at_initialisation():
    model = tiny("rezero")
    src = tokens(2, 6)
    memory, _ = model.encode(src)
    torch.testing.assert_close(memory, model.embed(src), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------- LayerScale
def test_layerscale(x):
    F, block = Affine(), randomize(make("layerscale"))
    (norm,) = norms(block)
    torch.testing.assert_close(block(x, F), x + block.gamma * F(ln(x, norm)))


@pytest.mark.parametrize("layers,gamma", [(1, 0.1), (6, 0.1), (18, 0.1),
                                          (19, 1e-5), (24, 1e-5), (25, 1e-6), (100, 1e-6)])
def test_layerscale_initial_gamma_follows_the_depth_of_its_stack(layers, gamma):
    for where in (place("encoder", 0, "ff", n=layers, m=3), place("decoder", 0, "ff", n=3, m=layers)):
        block = build_residual("layerscale", D, place=where)
        assert block.gamma.shape == (D,) and block.gamma.tolist() == pytest.approx([gamma] * D, rel=1e-6)
    assert tiny("layerscale").encoder.ends.norm is not None  # pre-norm: the stack ends with a LayerNorm


# ----------------------------------------------------------------------------------------------- Peri-LN
def test_peri_ln(x):
    F, block = Affine(), make("peri_ln")
    norm_in, norm_out = block.norm_in, block.norm_out
    torch.testing.assert_close(block(x, F), x + ln(F(ln(x, norm_in)), norm_out))
    assert len(norms(tiny("peri_ln").decoder.ends)) == 1


# ---------------------------------------------------------------------------------------------- DeepNorm
def deepnet_constants(side, n, m):
    """Wang et al. 2022, encoder-decoder: (α, β)."""
    if side == "encoder":
        return 0.81 * (n**4 * m) ** (1 / 16), 0.87 * (n**4 * m) ** (-1 / 16)
    return (3 * m) ** 0.25, (12 * m) ** -0.25


@pytest.mark.parametrize("n,m", [(6, 6), (18, 18), (2, 7)])
def test_deepnorm(x, n, m):
    for side in ("encoder", "decoder"):
        F, block = Affine(), make("deepnorm", where=place(side, 0, "ff", n, m))
        alpha, _ = deepnet_constants(side, n, m)
        (norm,) = norms(block)
        torch.testing.assert_close(block(x, F), ln(alpha * x + F(x), norm))
    assert deepnet_constants("encoder", 6, 6)[0] == pytest.approx(0.81 * 6 ** (5 / 16))


@pytest.mark.parametrize("init", ["xavier", "fairseq"])
def test_deepnorm_scales_v_o_and_feed_forward_by_beta_at_initialisation(init):
    n, m = 3, 2
    post = tiny("post_ln", init=init, encoder_layers=n, decoder_layers=m).state_dict()
    deep = tiny("deepnorm", init=init, encoder_layers=n, decoder_layers=m).state_dict()
    d = 64
    checked = 0
    for key, value in post.items():
        if "residual" in key:
            continue
        side = key.split(".")[0]
        beta = deepnet_constants(side, n, m)[1] if side in ("encoder", "decoder") else 1.0
        if key.endswith("in_proj.weight"):  # W^Q, W^K unchanged, W^V scaled
            torch.testing.assert_close(deep[key][: 2 * d], value[: 2 * d], rtol=0, atol=0)
            torch.testing.assert_close(deep[key][2 * d:], beta * value[2 * d:])
            checked += 1
        elif key.endswith(("out_proj.weight", "w1.weight", "w2.weight")):
            torch.testing.assert_close(deep[key], beta * value)
            checked += 1
        else:  # biases, embeddings
            torch.testing.assert_close(deep[key], value, rtol=0, atol=0)
    assert checked == n * (1 + 1 + 2) + m * (2 + 2 + 2)  # in_proj, out_proj per attention; w1, w2 per layer


# ------------------------------------------------------------------------------------------------- Admin
def test_admin(x):
    F, block = Affine(), randomize(make("admin"))
    (norm,) = norms(block)
    torch.testing.assert_close(block(x, F), ln(block.omega * x + F(x), norm))


def test_admin_profiling_sets_omega_from_the_variances_of_a_known_batch():
    """ω of every block after ``data_dependent_init``, against the profiling computed here: through each stack,
    ω_k = r_k, r₁ = 1, r_{k+1} = √(Var[ω_k·x_k] + Var[F(x_k)]), with the model's attention and feed-forward
    modules as the F's (eval mode) and LayerNorm written out."""
    model = tiny("admin", encoder_layers=2, decoder_layers=2)
    src, tgt = tokens(3, 7), tokens(3, 5, seed=1)
    src[0, 5:] = PAD
    mask = (src != PAD)[:, None, None, :]
    assert model.needs_data_init and all(b.omega.eq(1).all() for b, _ in model.residual_pairs())

    def var(t):
        return t.double().var(unbiased=False).item()

    expected = []

    def stack(x, pairs, calls):
        r = 1.0
        for (block, _), call in zip(pairs, calls):
            fx = call(x)
            expected.append(r)
            x, r = ln(r * x + fx, block.norm), math.sqrt(var(r * x) + var(fx))
        return x

    with torch.no_grad():
        enc_pairs = [p for layer in model.encoder.layers for p in layer.residual_pairs()]
        enc_calls = [f for layer in model.encoder.layers
                     for f in (lambda h, a=layer.self_attn: a(h, mask=mask), layer.ff)]
        memory = stack(model.embed(src), enc_pairs, enc_calls)
        dec_pairs = [p for layer in model.decoder.layers for p in layer.residual_pairs()]
        dec_calls = [f for layer in model.decoder.layers
                     for f in (lambda h, a=layer.self_attn: a(h, causal=True),
                               lambda h, a=layer.cross_attn: a(h, memory, mask=mask), layer.ff)]
        stack(model.embed(tgt), dec_pairs, dec_calls)

    model.train()
    assert model.data_dependent_init(src, tgt) is True
    assert model.training  # its mode is restored
    omegas = [block.omega for block, _ in model.residual_pairs()]
    assert len(omegas) == len(expected) == 2 * 2 + 2 * 3
    for omega, r in zip(omegas, expected):
        assert omega.tolist() == pytest.approx([r] * 64, rel=1e-5)
    assert expected[0] == expected[4] == 1.0 and all(r > 1 for r in expected[1:4] + expected[5:])

    # never twice, and the flag travels with the weights
    assert model.data_dependent_init(tokens(2, 4, seed=9), tokens(2, 3, seed=9)) is False
    assert [o.tolist() for o in omegas] == [o.tolist() for o in (b.omega for b, _ in model.residual_pairs())]
    fresh = tiny("admin", encoder_layers=2, decoder_layers=2)
    assert fresh.needs_data_init
    fresh.load_state_dict(model.state_dict())
    assert not fresh.needs_data_init and not tiny("post_ln").needs_data_init


# --------------------------------------------------------------------------------------------------- B2T
def test_b2t_adds_the_layer_input_before_the_last_layernorm_of_each_layer(x):
    """Two decoder layers (three sublayers each) with fixed F's, against the formula written out."""
    fs = [Affine(seed=s) for s in range(6)]
    blocks = [make("b2t", where=place("decoder", layer, sub, 2, 2), seed=10 + i)
              for i, (layer, sub) in enumerate((l, s) for l in range(2) for s in ("self_attn", "cross_attn", "ff"))]
    ends = build_stack_ends("b2t", D)
    state = ends.begin(x)
    for block, F in zip(blocks, fs):
        state = block(state, F)
    h = x
    for layer in range(2):
        x0 = h
        for i in range(3):
            k, F = 3 * layer + i, fs[3 * layer + i]
            h = ln(h + F(h) + (x0 if i == 2 else 0), blocks[k].norm)
    torch.testing.assert_close(ends.end(state), h)


# ---------------------------------------------------------------------------------------------- ResiDual
def test_resi_dual_combines_its_two_streams_at_the_end(x):
    fs = [Affine(seed=s) for s in range(4)]
    blocks = [make("resi_dual", where=place("encoder", i // 2, ("self_attn", "ff")[i % 2], 2, 2), seed=20 + i)
              for i in range(4)]
    ends = randomize_norms(build_stack_ends("resi_dual", D).double(), seed=30)
    state = ends.begin(x)
    for block, F in zip(blocks, fs):
        state = block(state, F)
    post, dual = x, x
    for block, F in zip(blocks, fs):
        fx = F(post)
        post, dual = ln(post + fx, block.norm), dual + fx
    torch.testing.assert_close(state[0], post)
    torch.testing.assert_close(state[1], dual)
    torch.testing.assert_close(ends.end(state), post + ln(dual, ends.norm))


# ----------------------------------------------------------------------------------------------- Highway
def test_highway(x):
    block = make("highway")
    assert norms(block) == [] and block.gate.bias.eq(-2).all()  # negative gate bias at initialisation
    F = Affine()
    randomize(block)
    t = torch.sigmoid(x @ block.gate.weight.T + block.gate.bias)
    torch.testing.assert_close(block(x, F), t * F(x) + (1 - t) * x)


# -------------------------------------------------------------------------------------- Hyper-Connections
def hyper_reference(block, streams, F, n, dynamic):
    """h = A_mᵀH, H' = A_rᵀH + B⊗F(LN(h)), with A = [A_m A_r], B static or input-dependent, one stream at a time."""
    a_static, b_static = block.static_alpha, block.static_beta
    if dynamic:
        normed = ln(streams, block.stream_norm)
        alpha = a_static + block.alpha_scale * torch.tanh(torch.einsum("...jd,dk->...jk", normed, block.alpha_weight))
        beta = b_static + block.beta_scale * torch.tanh(torch.einsum("...jd,d->...j", normed, block.beta_weight))
    else:
        alpha = a_static.expand(*streams.shape[:-2], n, n + 1)
        beta = b_static.expand(*streams.shape[:-2], n)
    h = sum(alpha[..., j, 0:1] * streams[..., j, :] for j in range(n))
    out = F(ln(h, block.norm))
    return torch.stack([sum(alpha[..., j, 1 + i:2 + i] * streams[..., j, :] for j in range(n))
                        + beta[..., i:i + 1] * out for i in range(n)], dim=-2)


@pytest.mark.parametrize("name,dynamic", [("hyper", True), ("hyper_static", False)])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_hyper_connections(x, name, dynamic, n):
    g = torch.Generator().manual_seed(5)
    streams = torch.randn(3, 5, n, D, generator=g, dtype=torch.float64)  # distinct streams
    F = Affine()
    block = randomize(make(name, n, place("decoder", 1, "cross_attn", 2, 2)))
    out = block(streams, F)
    assert F.calls == 1
    torch.testing.assert_close(out, hyper_reference(block, streams, F, n, dynamic))


@pytest.mark.parametrize("name", ["hyper", "hyper_static"])
def test_hyper_connections_initialisation(name):
    """A_m = e_(k mod n) for the k-th block of the stack, A_r = I, B = 1 (and the dynamic part 0): block k feeds its
    sublayer LN(H_(k mod n)) and adds the output to every stream unchanged."""
    n = 3
    g = torch.Generator().manual_seed(6)
    streams = torch.randn(2, 4, n, D, generator=g, dtype=torch.float64)
    for layer, sub in [(0, "self_attn"), (0, "ff"), (1, "self_attn"), (1, "ff"), (2, "self_attn")]:
        where = place("encoder", layer, sub, 3, 1)
        block = make(name, n, where)
        F = Affine()
        out = block(streams, F)
        k = where.depth
        torch.testing.assert_close(F.inputs[0], ln(streams[..., k % n, :], block.norm))
        torch.testing.assert_close(out, streams + F(F.inputs[0]).unsqueeze(-2))


@pytest.mark.parametrize("name", ["hyper", "hyper_static"])
@pytest.mark.parametrize("n", [1, 2, 4])
def test_hyper_connections_compute_what_pre_ln_computes_at_initialisation(name, n):
    """Same seed, same weights: n streams that all start as the embedding stay equal to the Pre-LN stream, and
    the end normalises their sum, so the logits are Pre-LN's (to LayerNorm's ε: n·x is normalised, not x)."""
    src, tgt = tokens(3, 8), tokens(3, 6, seed=1)
    src[1, 6:] = PAD
    pre, hyper = tiny("pre_ln", encoder_layers=3, decoder_layers=3), tiny(name, n, encoder_layers=3, decoder_layers=3)
    shared = [k for k in pre.state_dict() if "residual" not in k and "ends" not in k]
    assert all(torch.equal(pre.state_dict()[k], hyper.state_dict()[k]) for k in shared)
    torch.testing.assert_close(hyper(src, tgt), pre(src, tgt), rtol=1e-4, atol=1e-4)
    if n == 1:
        torch.testing.assert_close(hyper(src, tgt), pre(src, tgt), rtol=0, atol=0)


# ----------------------------------------------------------------------------------------- through train.py
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    pairs = [(" ".join(f"w{(i * 7 + j) % 30}" for j in range(2 + i % 5)),
              " ".join(f"v{(i * 5 + j) % 30}" for j in range(2 + i % 6))) for i in range(40)]
    return write_corpus(tmp_path_factory.mktemp("variants") / "corpus", pairs=pairs)


@pytest.mark.parametrize("name", list(RESIDUALS))
def test_train_py_trains_every_registered_variant(name, corpus, tmp_path, capsys):
    lam = 2 if residual_class(name).lambda_rule != "one" else 1
    run = tmp_path / "run"
    args = ["--data", str(corpus), "--vocab-size", "320", "--max-tokens", "128", "--max-len", "32", "--max-steps", "3",
            "--log-every", "1", "--val-every", "0", "--save-every", "0", "--warmup", "2", "--lr", "1e-3",
            "--skip", name, "--lambda", str(lam), "--run-dir", str(run)]
    assert main(args) == 0
    out = capsys.readouterr().out
    losses = [float(r["train/loss"]) for r in metrics(run) if r["train/loss"]]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert ("data-dependent initialisation" in out) == (name == "admin")
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 3 and ckpt["hyper_parameters"]["model"]["skip"] == name

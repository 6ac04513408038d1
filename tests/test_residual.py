"""Every residual variant against its formula, computed here independently of nmt.residual."""

import math

import pytest
import torch
from torch import nn

from nmt.model import Transformer, model_config
from nmt.residual import RESIDUALS, ResidualBlock, build_residual, check_lambda, register_residual, residual_class

D = 8


def layer_norm(x, weight, bias, eps=1e-5):
    """LN(x) = γ·(x − mean)/√(var + ε) + β, variance without Bessel's correction."""
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return weight * (x - mean) / torch.sqrt(var + eps) + bias


class Affine:
    """A fixed sublayer F(x) = xA + c that counts its calls and records its input."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.A = torch.randn(D, D, generator=g, dtype=torch.float64) / D**0.5
        self.c = torch.randn(D, generator=g, dtype=torch.float64)
        self.calls = 0
        self.inputs = []

    def __call__(self, x):
        self.calls += 1
        self.inputs.append(x)
        return x @ self.A + self.c


def randomize_norms(block, seed=1):
    """Give every LayerNorm a distinct, non-trivial γ and β so that the tests see which one is used."""
    g = torch.Generator().manual_seed(seed)
    for m in block.modules():
        if isinstance(m, nn.LayerNorm):
            m.weight.data = 1 + 0.5 * torch.randn(D, generator=g, dtype=torch.float64)
            m.bias.data = 0.5 * torch.randn(D, generator=g, dtype=torch.float64)
    return block


def make(name, lam=1.0):
    return randomize_norms(build_residual(name, D, lam=lam).double().eval())


@pytest.fixture
def x():
    return torch.randn(3, 5, D, generator=torch.Generator().manual_seed(42), dtype=torch.float64)


def norms(block):
    return [m for m in block.modules() if isinstance(m, nn.LayerNorm)]


def test_skip(x):
    F = Affine()
    torch.testing.assert_close(make("skip")(x, F), x + F(x))
    assert norms(make("skip")) == []


def test_post_ln(x):
    F, block = Affine(), make("post_ln")
    (ln,) = norms(block)
    torch.testing.assert_close(block(x, F), layer_norm(x + F(x), ln.weight, ln.bias))


def test_pre_ln(x):
    F, block = Affine(), make("pre_ln")
    (ln,) = norms(block)
    torch.testing.assert_close(block(x, F), x + F(layer_norm(x, ln.weight, ln.bias)))
    assert block.final_norm and not make("post_ln").final_norm


@pytest.mark.parametrize("lam", [0.5, 2.0, 3.0])
def test_xskip(x, lam):
    F = Affine()
    torch.testing.assert_close(make("xskip", lam)(x, F), lam * x + F(x))


@pytest.mark.parametrize("lam", [0.5, 2.0, 3.0])
def test_xskip_ln(x, lam):
    F, block = Affine(), make("xskip_ln", lam)
    (ln,) = norms(block)
    torch.testing.assert_close(block(x, F), layer_norm(lam * x + F(x), ln.weight, ln.bias))


@pytest.mark.parametrize("lam", [1, 2, 3, 4])
def test_rskip_ln(x, lam):
    F, block = Affine(), make("rskip_ln", lam)
    lns = norms(block)
    assert len(lns) == lam  # one LayerNorm per recursion step
    fx = F(x)
    y = layer_norm(x + fx, lns[0].weight, lns[0].bias)
    for ln in lns[1:]:
        y = layer_norm(x + y, ln.weight, ln.bias)
    torch.testing.assert_close(block(x, F), y)


def test_rskip_ln_lambda_2_by_hand():
    """A 3-dimensional case worked out on paper, γ = 1, β = 0, ε = 0: x = (0, 0, 3), F(x) = (0, 3, 0).

    x + F = (0, 3, 3): mean 2, deviations (−2, 1, 1), variance 2, so y₁ = (−2, 1, 1)/√2.
    x + y₁ = (−√2, 1/√2, 3 + 1/√2): mean 1, deviations (−1 − √2, 1/√2 − 1, 2 + 1/√2), variance 3 + √2,
    so y₂ = (−1 − √2, 1/√2 − 1, 2 + 1/√2)/√(3 + √2), which is neither y₁ nor LN(x + F).
    """
    r2 = math.sqrt(2)
    block = build_residual("rskip_ln", 3, lam=2).double()
    for ln in norms(block):
        ln.eps = 0.0
    x = torch.tensor([[0.0, 0.0, 3.0]], dtype=torch.float64)
    out = block(x, lambda h: torch.tensor([[0.0, 3.0, 0.0]], dtype=torch.float64))
    y1 = torch.tensor([[-2.0, 1.0, 1.0]], dtype=torch.float64) / r2
    y2 = torch.tensor([[-1 - r2, 1 / r2 - 1, 2 + 1 / r2]], dtype=torch.float64) / math.sqrt(3 + r2)
    torch.testing.assert_close(out, y2)
    assert (out - y1).abs().max() > 0.4  # the second step changed the output


@pytest.mark.parametrize("name,lam", [("skip", 1), ("post_ln", 1), ("pre_ln", 1), ("xskip", 2), ("xskip_ln", 0.5),
                                      ("rskip_ln", 3)])
def test_sublayer_called_exactly_once(x, name, lam):
    F = Affine()
    make(name, lam)(x, F)
    assert F.calls == 1


def test_identities(x):
    """rskip_ln(1) = post_ln, xskip(1) = skip, xskip_ln(1) = post_ln (with the same parameters)."""
    F = Affine()
    post = make("post_ln")
    for name in ("rskip_ln", "xskip_ln"):
        other = build_residual(name, D, lam=1).double()
        other.load_state_dict(_renamed(post.state_dict(), other))
        torch.testing.assert_close(other(x, F), post(x, F), rtol=0, atol=0)
    torch.testing.assert_close(make("xskip", 1)(x, F), make("skip")(x, F), rtol=0, atol=0)


def _renamed(state, target):
    """post_ln's parameters under the target block's names (same order, same shapes)."""
    return dict(zip(target.state_dict().keys(), state.values()))


def test_dropout_applies_to_the_sublayer_output_in_every_variant(x):
    """With dropout 1.0 in training mode F(x) is dropped entirely: each variant reduces to its skip path."""
    F = Affine()
    for name, lam in [("skip", 1), ("xskip", 2), ("post_ln", 1), ("xskip_ln", 2), ("rskip_ln", 2), ("pre_ln", 1)]:
        block = build_residual(name, D, lam=lam, dropout=1.0).double().train()
        dropped = block(x, F)
        expected = build_residual(name, D, lam=lam).double().eval()
        expected.load_state_dict(block.state_dict())
        torch.testing.assert_close(dropped, expected(x, lambda h: torch.zeros_like(h)))


@pytest.mark.parametrize(
    "name,lam,message",
    [
        ("rskip_ln", 0.5, "integer λ ≥ 1"),
        ("rskip_ln", 2.5, "integer λ ≥ 1"),
        ("rskip_ln", 0, "integer λ ≥ 1"),
        ("xskip", 0, "λ > 0"),
        ("xskip_ln", -1, "λ > 0"),
        ("post_ln", 2, "has no λ"),
        ("skip", 0.5, "has no λ"),
        ("pre_ln", 3, "has no λ"),
        ("xskip", float("nan"), "finite"),
    ],
)
def test_lambda_validation(name, lam, message):
    with pytest.raises(ValueError, match=message):
        build_residual(name, D, lam=lam)
    with pytest.raises(ValueError, match=message):
        check_lambda(name, lam)


def test_rskip_ln_accepts_integral_float():
    assert build_residual("rskip_ln", D, lam=2.0).lam == 2


def test_unknown_variant_lists_known_ones():
    with pytest.raises(ValueError, match="unknown skip variant 'nope'.*post_ln"):
        residual_class("nope")


def test_bad_import_path():
    with pytest.raises(ValueError, match="cannot import module"):
        residual_class("no_such_module_xyz:Block")
    with pytest.raises(ValueError, match="no torch.nn.Module class"):
        residual_class("math:sqrt")


class HalfSkip(ResidualBlock):
    """y = x + ½·F(x)"""

    def forward(self, x, sublayer):
        return x + 0.5 * self.dropout(sublayer(x))


def test_custom_block_by_registration_and_by_import_path(x):
    try:
        register_residual("half_skip_test")(HalfSkip)
        F = Affine()
        torch.testing.assert_close(build_residual("half_skip_test", D).double()(x, F), x + 0.5 * F(x))
        # the same class, by import path, inside a whole model: no edit of the project needed
        by_path = residual_class(f"{__name__}:HalfSkip")
        assert by_path is HalfSkip
        model = Transformer(model_config("tiny", 50, skip=f"{__name__}:HalfSkip"))
        assert isinstance(model.encoder.layers[0].ff_residual, HalfSkip)
        assert model(torch.randint(4, 50, (2, 5)), torch.randint(4, 50, (2, 4))).shape == (2, 4, 50)
        with pytest.raises(ValueError, match="already registered"):
            register_residual("skip")(HalfSkip)
    finally:
        RESIDUALS.pop("half_skip_test", None)


def test_every_registered_variant_has_its_formula_in_the_docstring():
    for name, cls in RESIDUALS.items():
        assert "F(" in (cls.__doc__ or ""), f"{name} must state its formula"

"""Residual blocks: how a sublayer's input x and output F(x) are combined.

Every sublayer of the Transformer (self-attention, cross-attention, feed-forward) is wrapped by one
residual block. The block is the one thing the skip-connection variants of Liu et al. (COLING 2020,
"Rethinking Skip Connection with Layer Normalization in Transformers and ResNets") change, so it is the
one thing this module defines, together with the designs that came after it (ReZero, LayerScale,
Peri-LN, DeepNorm, Admin, B2T, ResiDual, Highway, Hyper-Connections). ``F(x)`` below always means the
sublayer's output after residual dropout, which every variant applies identically (``self.dropout``)
before combining.

The interface, simple case first::

    @register_residual("my_skip")
    class MySkip(ResidualBlock):
        '''y = x + 0.5 F(x)'''
        def forward(self, x, sublayer):
            return x + 0.5 * self.dropout(sublayer(x))

- ``forward(state, sublayer)`` calls ``sublayer`` exactly once and returns the new state. For most
  variants the state is the hidden tensor (B, T, d); a variant that carries several streams (ResiDual:
  two, Hyper-Connections: n, B2T: the layer's input besides the hidden state) keeps them in its state,
  a tuple or a tensor with a stream axis, and ``sublayer`` still takes and returns one (B, T, d) tensor.
- A block is built as ``cls(d_model, lam=1.0, dropout=0.0, place=None)``; ``place`` (a ``Place``) says
  where it sits: encoder or decoder, which layer, which sublayer, how many encoder and decoder layers.
  A class whose constructor has no ``place`` (the older interface) still works: it gets ``place`` as an
  attribute after construction.
- A stack (the encoder, the decoder) begins and ends as the block class says: ``cls.stack_ends(d_model,
  lam)`` gives a small module with ``begin`` (embedding output → state) and ``end`` (state → the
  stack's output), which owns any parameters of its own. By default the state is the hidden tensor,
  and a class with ``final_norm = True`` (pre-norm) ends the stack with a LayerNorm, since its output is
  otherwise an unnormalised sum of every sublayer's output.
- ``init_sublayer(sublayer)`` is called once per block after the model's own initialisation, with the
  module the block wraps (DeepNorm rescales its weights). A block's own parameters are initialised by
  the block (in its constructor); the model's generic initialisation leaves them alone.
- A class may declare a one-time data-dependent initialisation (``data_dependent_init``, Admin):
  ``Transformer.data_dependent_init(src, tgt_in)`` runs it on one batch before the first update; the
  result lives in the parameters, so it is in every checkpoint, and it never runs twice.
- What the rest of the project needs to know about a variant is declared on its class and read from
  there, never from its name: which λ it takes (``lambda_rule``), at which λ it is the same model as
  another variant (``same_as``), whether its stack ends with a LayerNorm (``final_norm``).

Variants are chosen by name (``--skip NAME``) from the registry ``RESIDUALS``; a class that lives
outside the project needs no registration: ``--skip package.module:ClassName`` imports it. Bad names
and λ raise ``UnknownVariant`` and ``BadLambda`` (both ``ValueError``), whose fields say what was wrong.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

Sublayer = Callable[[Tensor], Tensor]
State = Tensor | tuple[Tensor, ...]
"""What flows from block to block: the hidden tensor, or a variant's several streams."""

RESIDUALS: dict[str, type[nn.Module]] = {}
"""Registered residual blocks, by the name ``--skip`` accepts, in the order they were registered."""

BASELINE = "post_ln"
"""The variant every other is compared with (Δ BLEU, claims): the original Transformer's block."""

SUBLAYERS = {"encoder": ("self_attn", "ff"), "decoder": ("self_attn", "cross_attn", "ff")}
"""The sublayers of an encoder and a decoder layer, in the order they compute."""


# ----------------------------------------------------------------------------------------------- errors
class UnknownVariant(ValueError):
    """``--skip NAME`` names no registered variant and no importable ``package.module:Class``."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


class BadLambda(ValueError):
    """A λ the variant does not accept: ``variant``, ``lam``, and ``reason`` (the message without ``hint``, which
    suggests what to use instead)."""

    def __init__(self, variant: str, lam: object, reason: str, hint: str = ""):
        self.variant, self.lam, self.reason, self.hint = variant, lam, reason, hint
        super().__init__(reason + (f"; {hint}" if hint else ""))


# ------------------------------------------------------------------------------------------------ place
@dataclass(frozen=True)
class Place:
    """Where a block sits: ``side`` ("encoder" or "decoder"), ``layer`` (0-based), ``sublayer`` ("self_attn",
    "cross_attn" or "ff"), and the depth of both stacks (``encoder_layers``, ``decoder_layers``)."""

    side: str
    layer: int
    sublayer: str
    encoder_layers: int
    decoder_layers: int

    def __post_init__(self):
        if self.side not in SUBLAYERS:
            raise ValueError(f"side must be 'encoder' or 'decoder', got {self.side!r}")
        if self.sublayer not in SUBLAYERS[self.side]:
            raise ValueError(f"an {self.side} layer has no sublayer {self.sublayer!r} (it has {SUBLAYERS[self.side]})")
        if min(self.encoder_layers, self.decoder_layers) < 1 or not 0 <= self.layer < self.layers:
            raise ValueError(f"layer {self.layer} of {self.layers} {self.side} layers is not a place")

    @property
    def layers(self) -> int:
        """The number of layers of this block's stack."""
        return self.encoder_layers if self.side == "encoder" else self.decoder_layers

    @property
    def index(self) -> int:
        """The sublayer's position within its layer (0 for self-attention)."""
        return SUBLAYERS[self.side].index(self.sublayer)

    @property
    def sublayers_per_layer(self) -> int:
        return len(SUBLAYERS[self.side])

    @property
    def depth(self) -> int:
        """The block's position in its stack, counting every sublayer from 0 (layer · sublayers per layer + index)."""
        return self.layer * self.sublayers_per_layer + self.index

    @property
    def is_first_in_layer(self) -> bool:
        return self.index == 0

    @property
    def is_last_in_layer(self) -> bool:
        return self.index == self.sublayers_per_layer - 1

    @property
    def is_first_in_stack(self) -> bool:
        return self.depth == 0

    @property
    def is_last_in_stack(self) -> bool:
        return self.layer == self.layers - 1 and self.is_last_in_layer


# ------------------------------------------------------------------------------------------- stack ends
class StackEnds(nn.Module):
    """How a stack of blocks begins (embedding output → state) and ends (state → the stack's output).

    This default carries the hidden tensor itself and leaves it as it is at both ends.
    """

    def begin(self, x: Tensor) -> State:
        return x

    def end(self, state: State) -> Tensor:
        return state


class FinalNorm(StackEnds):
    """The stack ends with a LayerNorm (pre-norm designs, whose stream is an unnormalised sum)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)

    def end(self, state: Tensor) -> Tensor:
        return self.norm(state)


# --------------------------------------------------------------------------------------------- registry
def register_residual(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a residual block available as ``--skip name``."""

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        if name in RESIDUALS and RESIDUALS[name] is not cls:
            raise ValueError(f"residual block {name!r} is already registered ({RESIDUALS[name].__qualname__})")
        RESIDUALS[name] = cls
        cls.registered_name = name
        return cls

    return add


class ResidualBlock(nn.Module):
    """Base class: holds the residual dropout and the block's place, validates λ.

    Subclasses implement ``forward(state, sublayer)`` and declare, as class attributes:

    - ``lambda_rule``: which λ the variant accepts: ``"one"`` (no λ: only 1, the default), ``"positive"``
      (any real number > 0) or ``"integer"`` (an integer ≥ 1, saying what it counts in ``lambda_meaning``);
    - ``same_as``: {λ: name} where the variant is the same model as the registered variant ``name`` at λ = 1;
    - ``final_norm``: True when a stack of these blocks ends with a LayerNorm (used by the default
      ``stack_ends``);
    - ``needs_place``: True when the block cannot be built without its ``Place``;
    - ``stream_names``: for a block whose state holds several streams, what each is (``nmt.diagnose`` labels its
      figures with them); by default the streams are numbered.
    """

    final_norm: ClassVar[bool] = False
    lambda_rule: ClassVar[str] = "one"
    lambda_meaning: ClassVar[str] = ""
    same_as: ClassVar[dict[float, str]] = {}
    needs_place: ClassVar[bool] = False
    data_dependent_init: ClassVar[Callable | None] = None
    """A classmethod ``(blocks, run)`` for a one-time initialisation from data (see ``Admin``), or None."""
    registered_name: ClassVar[str] = ""
    stream_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, d_model: int, lam: float = 1.0, dropout: float = 0.0, place: Place | None = None):
        super().__init__()
        if place is None and self.needs_place:
            raise ValueError(f"skip variant {self.variant_name()!r} depends on where it sits in the model: build it "
                             "with place=Place(...)")
        self.d_model = d_model
        self.lam = self.check_lambda(lam)
        self.dropout = nn.Dropout(dropout)
        self.place = place

    def forward(self, state: State, sublayer: Sublayer) -> State:
        raise NotImplementedError

    @classmethod
    def variant_name(cls) -> str:
        return cls.registered_name or cls.__qualname__

    @classmethod
    def check_lambda(cls, lam: float) -> float:
        """Return λ in the type the variant uses, or raise BadLambda saying what it accepts."""
        name = cls.variant_name()
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam):
            raise BadLambda(name, lam, f"λ must be a finite number, got {lam!r}")
        if cls.lambda_rule == "one":
            if lam != 1:
                others = [n for n, c in RESIDUALS.items() if getattr(c, "lambda_rule", "one") != "one"]
                hint = f"use a variant with λ such as {_quoted(others)}" if others else ""
                raise BadLambda(name, lam, f"skip variant {name!r} has no λ (it is fixed at 1), got λ={lam:g}", hint)
            return 1.0
        if cls.lambda_rule == "positive":
            if lam <= 0:
                raise BadLambda(name, lam, f"skip variant {name!r} needs λ > 0, got λ={lam:g}")
            return float(lam)
        if cls.lambda_rule == "integer":
            if lam < 1 or lam != int(lam):
                meaning = f" ({cls.lambda_meaning})" if cls.lambda_meaning else ""
                raise BadLambda(name, lam, f"skip variant {name!r} needs an integer λ ≥ 1{meaning}, got λ={lam:g}")
            return int(lam)
        raise TypeError(f"{cls.__qualname__}.lambda_rule must be 'one', 'positive' or 'integer'")

    @classmethod
    def stack_ends(cls, d_model: int, lam: float = 1.0) -> StackEnds:
        """The beginning and end of a stack of these blocks: identity, and a final LayerNorm if ``final_norm``."""
        return FinalNorm(d_model) if cls.final_norm else StackEnds()

    def init_sublayer(self, sublayer: nn.Module) -> None:
        """Called once after the model's initialisation with the module this block wraps; nothing by default."""

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, lam={self.lam:g}"


def _quoted(names: list[str]) -> str:
    quoted = [f"'{n}'" for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


# ------------------------------------------------------------------------------ the paper's six variants
@register_residual("skip")
class Skip(ResidualBlock):
    """Plain skip connection, no normalisation at all:  y = x + F(x)."""

    def forward(self, x: Tensor, sublayer: Sublayer) -> Tensor:
        return x + self.dropout(sublayer(x))


@register_residual("post_ln")
class PostLN(ResidualBlock):
    """Post-LN, the original Transformer block (Vaswani et al. 2017):  y = LN(x + F(x))."""

    def __init__(self, d_model: int, lam: float = 1.0, dropout: float = 0.0, place: Place | None = None):
        super().__init__(d_model, lam, dropout, place)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, sublayer: Sublayer) -> Tensor:
        return self.norm(x + self.dropout(sublayer(x)))


@register_residual("pre_ln")
class PreLN(ResidualBlock):
    """Pre-LN:  y = x + F(LN(x)).  The stack ends with a final LayerNorm."""

    final_norm = True

    def __init__(self, d_model: int, lam: float = 1.0, dropout: float = 0.0, place: Place | None = None):
        super().__init__(d_model, lam, dropout, place)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, sublayer: Sublayer) -> Tensor:
        return x + self.dropout(sublayer(self.norm(x)))


@register_residual("xskip")
class ExpandedSkip(ResidualBlock):
    """Expanded skip (xSkip), λ fixed and not learned:  y = λ·x + F(x).  λ > 0; λ = 1 is ``skip``."""

    lambda_rule = "positive"
    same_as = {1.0: "skip"}

    def forward(self, x: Tensor, sublayer: Sublayer) -> Tensor:
        return self.lam * x + self.dropout(sublayer(x))


@register_residual("xskip_ln")
class ExpandedSkipLN(ResidualBlock):
    """Expanded skip with LayerNorm (xSkip+LN):  y = LN(λ·x + F(x)).  λ > 0; λ = 1 is ``post_ln``."""

    lambda_rule = "positive"
    same_as = {1.0: "post_ln"}

    def __init__(self, d_model: int, lam: float = 1.0, dropout: float = 0.0, place: Place | None = None):
        super().__init__(d_model, lam, dropout, place)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, sublayer: Sublayer) -> Tensor:
        return self.norm(self.lam * x + self.dropout(sublayer(x)))


@register_residual("rskip_ln")
class RecursiveSkipLN(ResidualBlock):
    """Recursive skip with LayerNorm (rSkip+LN), λ an integer ≥ 1:

        y₁ = LN₁(x + F(x))
        yᵢ = LNᵢ(x + yᵢ₋₁)      for i = 2 … λ
        y  = y_λ

    F is computed once; every step has its own LayerNorm. λ = 1 is exactly ``post_ln``.
    """

    lambda_rule = "integer"
    lambda_meaning = "the number of recursion steps"
    same_as = {1.0: "post_ln"}

    def __init__(self, d_model: int, lam: float = 1.0, dropout: float = 0.0, place: Place | None = None):
        super().__init__(d_model, lam, dropout, place)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(self.lam))

    def forward(self, x: Tensor, sublayer: Sublayer) -> Tensor:
        y = self.norms[0](x + self.dropout(sublayer(x)))
        for norm in self.norms[1:]:
            y = norm(x + y)
        return y


# ------------------------------------------------------------------------------- the designs that came after
@register_residual("rezero")
class ReZero(ResidualBlock):
    """ReZero (Bachlechner et al. 2020, "ReZero is All You Need"):  y = x + α·F(x).

    α is one learned scalar per block, initialised to 0, so that every block is the identity at
    initialisation; there is no LayerNorm anywhere in the block or at the end of the stack.
    """

    def __init__(self, d_model: int, lam: float = 1.0, dropout: float = 0.0, place: Place | None = None):
        super().__init__(d_model, lam, dropout, place)
        self.alpha = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, sublayer: Sublayer) -> Tensor:
        return x + self.alpha * self.dropout(sublayer(x))


@register_residual("layerscale")
class LayerScale(ResidualBlock):
    """LayerScale (Touvron et al. 2021, CaiT, "Going deeper with Image Transformers"):  y = x + diag(γ)·F(LN(x)).

    γ ∈ R^d is learned per channel and initialised to a small ε that depends on the depth L of the stack
    (its number of layers), as in CaiT: ε = 0.1 for L ≤ 18, 10⁻⁵ for L ≤ 24, 10⁻⁶ beyond. Pre-norm, so the
    stack ends with a LayerNorm.
    """

    final_norm = True
    needs_place = True

    def __init__(self, d_model: int, lam: float = 1.0, dropout: float = 0.0, place: Place | None = None):
        super().__init__(d_model, lam, dropout, place)
        self.norm = nn.LayerNorm(d_model)
        self.gamma = nn.Parameter(torch.full((d_model,), self.initial_scale(self.place.layers)))

    @staticmethod
    def initial_scale(depth: int) -> float:
        """CaiT's initial γ for a stack of ``depth`` layers."""
        return 0.1 if depth <= 18 else 1e-5 if depth <= 24 else 1e-6

    def forward(self, x: Tensor, sublayer: Sublayer) -> Tensor:
        return x + self.gamma * self.dropout(sublayer(self.norm(x)))


@register_residual("peri_ln")
class PeriLN(ResidualBlock):
    """Peri-LN / Sandwich-LN:  y = x + LN_out(F(LN_in(x))).

    A LayerNorm on the sublayer's input and another on its output (Ding et al. 2021, CogView's "Sandwich-LN";
    Kim et al. ICML 2025, "Peri-LN"). F(x) is the sublayer's output after residual dropout, as in every variant,
    so LN_out normalises it. The stream itself is never normalised, so the stack ends with a LayerNorm.
    """

    final_norm = True

    def __init__(self, d_model: int, lam: float = 1.0, dropout: float = 0.0, place: Place | None = None):
        super().__init__(d_model, lam, dropout, place)
        self.norm_in = nn.LayerNorm(d_model)
        self.norm_out = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, sublayer: Sublayer) -> Tensor:
        return x + self.norm_out(self.dropout(sublayer(self.norm_in(x))))


@register_residual("deepnorm")
class DeepNorm(ResidualBlock):
    """DeepNorm (Wang et al. 2022, "DeepNet: Scaling Transformers to 1,000 Layers"):  y = LN(α·x + F(x)).

    For N encoder and M decoder layers: encoder α = 0.81·(N⁴M)^(1/16), β = 0.87·(N⁴M)^(−1/16); decoder
    α = (3M)^(1/4), β = (12M)^(−1/4). At initialisation the value projection W^V and the output projection W^O
    of every attention, and both feed-forward matrices W₁ and W₂, are multiplied by β: with ``--init xavier``
    that is Xavier-uniform with gain β, as in the paper (W^Q and W^K keep gain 1); biases are unchanged.
    """

    needs_place = True

    def __init__(self, d_model: int, lam: float = 1.0, dropout: float = 0.0, place: Place | None = None):
        super().__init__(d_model, lam, dropout, place)
        self.norm = nn.LayerNorm(d_model)
        self.alpha, self.beta = self.constants(self.place)

    @staticmethod
    def constants(place: Place) -> tuple[float, float]:
        """(α, β) of a block at ``place``."""
        n, m = place.encoder_layers, place.decoder_layers
        if place.side == "encoder":
            return 0.81 * (n**4 * m) ** (1 / 16), 0.87 * (n**4 * m) ** (-1 / 16)
        return (3 * m) ** (1 / 4), (12 * m) ** (-1 / 4)

    def init_sublayer(self, sublayer: nn.Module) -> None:
        with torch.no_grad():
            if self.place.sublayer == "ff":
                weights = [sublayer.w1.weight, sublayer.w2.weight]
            else:  # W^Q, W^K, W^V are one stacked (3d, d) matrix: V is its last third
                weights = [sublayer.in_proj.weight[2 * self.d_model:], sublayer.out_proj.weight]
            for w in weights:
                w.mul_(self.beta)

    def forward(self, x: Tensor, sublayer: Sublayer) -> Tensor:
        return self.norm(self.alpha * x + self.dropout(sublayer(x)))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha:.4g}, beta={self.beta:.4g}"


@register_residual("admin")
class Admin(ResidualBlock):
    """Admin (Liu et al. EMNLP 2020, "Understanding the Difficulty of Training Transformers"):  y = LN(ω⊙x + F(x)).

    ω ∈ R^d is learned per channel. It starts at 1 and is set once, before the first update, by profiling one
    batch (``Transformer.data_dependent_init``): through each stack in order, block k gets
    ω_k = r_k (every channel) with r_1 = 1 and r_{k+1} = √(Var[ω_k·x_k] + Var[F(x_k)]), x_k the block's input
    and the variances over every element of the batch, so that each block's skip carries the variance its
    input has accumulated from the sublayers before it (the official implementation's profiling, which counts
    the encoder's and the decoder's blocks separately). The profiling pass runs without dropout (eval mode),
    so it draws no random numbers and every process computes the same ω; the official one kept dropout on.
    """

    needs_place = True

    def __init__(self, d_model: int, lam: float = 1.0, dropout: float = 0.0, place: Place | None = None):
        super().__init__(d_model, lam, dropout, place)
        self.norm = nn.LayerNorm(d_model)
        self.omega = nn.Parameter(torch.ones(d_model))
        self._profile: dict[str, float] | None = None  # the running r of each stack, during profiling only

    def forward(self, x: Tensor, sublayer: Sublayer) -> Tensor:
        fx = self.dropout(sublayer(x))
        if self._profile is not None:
            side = self.place.side
            with torch.no_grad():
                self.omega.fill_(self._profile[side])
            self._profile[side] = math.sqrt(_variance(self.omega * x) + _variance(fx))
        return self.norm(self.omega * x + fx)

    @classmethod
    def data_dependent_init(cls, blocks: list[Admin], run: Callable[[], object]) -> None:
        """Set every block's ω by one forward pass ``run()`` (no gradient) through ``blocks``."""
        profile = {side: 1.0 for side in SUBLAYERS}
        for block in blocks:
            block._profile = profile
        try:
            run()
        finally:
            for block in blocks:
                block._profile = None


def _variance(t: Tensor) -> float:
    """The variance of every element of ``t`` (without Bessel's correction), in float64."""
    return t.detach().double().var(unbiased=False).item()


@register_residual("b2t")
class B2T(ResidualBlock):
    """Post-LN with a bottom-to-top connection (Takase et al. 2023, "B2T Connection: Serving Stability and
    Performance in Deep Transformers"): every block is  y = LN(x + F(x))  except the last of each layer, which
    adds the layer's input x₀ again before its LayerNorm:  y = LN(x + F(x) + x₀).

    The state is (hidden, the current layer's input): the first block of a layer records its input.
    """

    needs_place = True
    stream_names = ("hidden", "layer input x₀")

    def __init__(self, d_model: int, lam: float = 1.0, dropout: float = 0.0, place: Place | None = None):
        super().__init__(d_model, lam, dropout, place)
        self.norm = nn.LayerNorm(d_model)

    @classmethod
    def stack_ends(cls, d_model: int, lam: float = 1.0) -> StackEnds:
        return _LayerInputEnds()

    def forward(self, state: tuple[Tensor, Tensor], sublayer: Sublayer) -> tuple[Tensor, Tensor]:
        x, layer_input = state
        if self.place.is_first_in_layer:
            layer_input = x
        y = x + self.dropout(sublayer(x))
        if self.place.is_last_in_layer:
            y = y + layer_input
        return self.norm(y), layer_input


class _LayerInputEnds(StackEnds):
    """B2T's state: (hidden, the layer's input); the stack's output is the hidden tensor."""

    def begin(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x, x

    def end(self, state: tuple[Tensor, Tensor]) -> Tensor:
        return state[0]


@register_residual("resi_dual")
class ResiDual(ResidualBlock):
    """ResiDual (Xie et al. 2023, "ResiDual: Transformer with Dual Residual Connections"): two streams,

        x_a ← LN(x_a + F(x_a))     the Post-LN stream, which feeds every sublayer
        x_d ← x_d + F(x_a)         the un-normalised sum of every sublayer output (a Pre-LN-like stream)

    both starting at the embedding output x, combined at the end of the stack:  output = x_a + LN(x_d).
    """

    stream_names = ("x_a (Post-LN)", "x_d (sum)")

    def __init__(self, d_model: int, lam: float = 1.0, dropout: float = 0.0, place: Place | None = None):
        super().__init__(d_model, lam, dropout, place)
        self.norm = nn.LayerNorm(d_model)

    @classmethod
    def stack_ends(cls, d_model: int, lam: float = 1.0) -> StackEnds:
        return _DualEnds(d_model)

    def forward(self, state: tuple[Tensor, Tensor], sublayer: Sublayer) -> tuple[Tensor, Tensor]:
        post, dual = state
        fx = self.dropout(sublayer(post))
        return self.norm(post + fx), dual + fx


class _DualEnds(StackEnds):
    """ResiDual's ends: both streams start at x; the output is x_a + LN(x_d), with its own LayerNorm."""

    def __init__(self, d_model: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)

    def begin(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x, x

    def end(self, state: tuple[Tensor, Tensor]) -> Tensor:
        post, dual = state
        return post + self.norm(dual)


@register_residual("highway")
class Highway(ResidualBlock):
    """Highway connection (Srivastava et al. 2015, "Training Very Deep Networks"):

        y = T(x)⊙F(x) + (1 − T(x))⊙x,     T(x) = σ(W_T x + b_T)

    W_T Xavier-uniform and b_T = −2 at initialisation: the paper initialises b_T negative (−1, −3, …) so that
    a block starts close to carrying x through. No LayerNorm, deliberately: the gate makes y a per-channel
    convex combination of x and F(x), so the stream does not grow with depth as x + F(x) does, which is what
    Post-LN's normalisation corrects; a LayerNorm would make this a gated Post-LN, a different design from the
    paper's. The stack does not end with one either.
    """

    def __init__(self, d_model: int, lam: float = 1.0, dropout: float = 0.0, place: Place | None = None):
        super().__init__(d_model, lam, dropout, place)
        with torch.random.fork_rng(devices=[]):  # its draws leave the model's RNG stream as every other variant has it
            self.gate = nn.Linear(d_model, d_model)
            nn.init.xavier_uniform_(self.gate.weight)
        nn.init.constant_(self.gate.bias, -2.0)

    def forward(self, x: Tensor, sublayer: Sublayer) -> Tensor:
        t = torch.sigmoid(self.gate(x))
        return t * self.dropout(sublayer(x)) + (1 - t) * x


@register_residual("hyper")
class HyperConnections(ResidualBlock):
    """Dynamic Hyper-Connections (Zhu et al. ICLR 2025, "Hyper-Connections"), expansion rate n = λ.

    The state is n streams H ∈ R^(n×d) per position, all equal to the embedding output at the start of the
    stack. A block with connection weights A_m ∈ R^n, A_r ∈ R^(n×n), B ∈ R^n computes

        h  = A_mᵀ H                   the sublayer's input, a weighted sum of the streams
        H ← A_rᵀ H + B ⊗ F(LN(h))     every stream gets its own mix of the streams plus B_j times the output

    (the sublayer is wrapped pre-norm, F(LN(h))), and the stack's output is LN(Σ_j H_j). Dynamic weights:
    A = [A_m A_r] = A_static + s_α·tanh(H̄ W_α) and B = B_static + s_β·tanh(H̄ W_β), with H̄ = LN(H) per stream.
    Initialisation as in the paper, equivalent to the pre-norm residual: for the k-th block of the stack
    (every sublayer counted from 0) A_m = e_(k mod n), A_r = I, B = 1; W_α = W_β = 0, s_α = s_β = 0.01.
    At initialisation every stream then holds the Pre-LN stream and the stack computes what ``pre_ln``
    computes (up to LayerNorm's ε: the end normalises n times the Pre-LN stream).
    """

    lambda_rule = "integer"
    lambda_meaning = "the expansion rate n of Hyper-Connections: the number of residual streams"
    final_norm = True
    needs_place = True
    dynamic: ClassVar[bool] = True

    def __init__(self, d_model: int, lam: float = 1.0, dropout: float = 0.0, place: Place | None = None):
        super().__init__(d_model, lam, dropout, place)
        n = self.lam
        self.norm = nn.LayerNorm(d_model)
        a_m = torch.zeros(n, 1)
        a_m[self.place.depth % n] = 1.0
        self.static_alpha = nn.Parameter(torch.cat([a_m, torch.eye(n)], dim=1))  # (n, 1 + n): [A_m A_r]
        self.static_beta = nn.Parameter(torch.ones(n))
        if self.dynamic:
            self.stream_norm = nn.LayerNorm(d_model)
            self.alpha_weight = nn.Parameter(torch.zeros(d_model, 1 + n))
            self.alpha_scale = nn.Parameter(torch.full((1,), 0.01))
            self.beta_weight = nn.Parameter(torch.zeros(d_model))
            self.beta_scale = nn.Parameter(torch.full((1,), 0.01))

    @classmethod
    def stack_ends(cls, d_model: int, lam: float = 1.0) -> StackEnds:
        return _StreamEnds(d_model, cls.check_lambda(lam))

    def connections(self, streams: Tensor) -> tuple[Tensor, Tensor]:
        """[A_m A_r] (…, n, 1 + n) and B (…, n) for the streams (…, n, d)."""
        if not self.dynamic:
            return self.static_alpha, self.static_beta
        normed = self.stream_norm(streams)
        alpha = self.static_alpha + self.alpha_scale * torch.tanh(normed @ self.alpha_weight)
        beta = self.static_beta + self.beta_scale * torch.tanh(normed @ self.beta_weight)
        return alpha, beta

    def forward(self, streams: Tensor, sublayer: Sublayer) -> Tensor:
        alpha, beta = self.connections(streams)
        mixed = alpha.transpose(-1, -2) @ streams  # (…, 1 + n, d): the sublayer's input, then the n mixed streams
        out = self.dropout(sublayer(self.norm(mixed[..., 0, :])))
        return mixed[..., 1:, :] + beta.unsqueeze(-1) * out.unsqueeze(-2)


@register_residual("hyper_static")
class StaticHyperConnections(HyperConnections):
    """Static Hyper-Connections (Zhu et al. ICLR 2025), expansion rate n = λ: ``hyper`` with learned weights
    A_m, A_r, B that do not depend on the input (no W_α, W_β):  h = A_mᵀ H,  H ← A_rᵀ H + B ⊗ F(LN(h))."""

    dynamic = False


class _StreamEnds(StackEnds):
    """Hyper-Connections' ends: the embedding output copied into n streams; the output is LN(Σ_j H_j)."""

    def __init__(self, d_model: int, n: int):
        super().__init__()
        self.n = n
        self.norm = nn.LayerNorm(d_model)

    def begin(self, x: Tensor) -> Tensor:
        return x.unsqueeze(-2).expand(*x.shape[:-1], self.n, x.size(-1))

    def end(self, streams: Tensor) -> Tensor:
        return self.norm(streams.sum(dim=-2))


# ---------------------------------------------------------------------------------------- lookups
def residual_class(name: str) -> type[nn.Module]:
    """The block class for ``--skip name``: a registered name, or ``package.module:ClassName``."""
    if ":" in name:
        module_name, _, class_name = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise UnknownVariant(name, f"--skip {name}: cannot import module {module_name!r} ({e})") from None
        cls = getattr(module, class_name, None)
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise UnknownVariant(name, f"--skip {name}: {module_name!r} has no torch.nn.Module class {class_name!r}")
        return cls
    if name not in RESIDUALS:
        known = ", ".join(sorted(RESIDUALS))
        raise UnknownVariant(name, f"unknown skip variant {name!r}; known: {known} (or package.module:ClassName)")
    return RESIDUALS[name]


def check_lambda(name: str, lam: float) -> float:
    """Validate λ for a variant without building it (for early, clear CLI errors)."""
    cls = residual_class(name)
    check = getattr(cls, "check_lambda", None)
    return check(lam) if check is not None else lam


def build_residual(name: str, d_model: int, lam: float = 1.0, dropout: float = 0.0,
                   place: Place | None = None) -> nn.Module:
    """Build the residual block ``name`` (see ``residual_class``) for a model of width ``d_model`` at ``place``."""
    cls = residual_class(name)
    parameters = inspect.signature(cls).parameters.values()
    if any(p.name == "place" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return cls(d_model, lam=lam, dropout=dropout, place=place)
    block = cls(d_model, lam=lam, dropout=dropout)  # the older constructor, without place
    block.place = place
    return block


def build_stack_ends(name: str, d_model: int, lam: float = 1.0) -> StackEnds:
    """How a stack of ``name`` blocks begins and ends (``ResidualBlock.stack_ends``; for a class without it,
    a final LayerNorm if it declares ``final_norm``)."""
    cls = residual_class(name)
    if hasattr(cls, "stack_ends"):
        return cls.stack_ends(d_model, lam)
    return FinalNorm(d_model) if getattr(cls, "final_norm", False) else StackEnds()


def ends_with_norm(name: str) -> bool:
    """Whether a stack of ``name`` blocks ends with a LayerNorm, as the class declares (``final_norm``)."""
    return bool(getattr(residual_class(name), "final_norm", False))


def same_model(name: str, lam: float) -> str | None:
    """The registered variant that ``name`` at ``lam`` is the same model as (at its λ = 1), or None."""
    cls = residual_class(name)
    return dict(getattr(cls, "same_as", {})).get(float(check_lambda(name, lam)))


def identities() -> list[tuple[str, float, str]]:
    """Every (variant, λ, the variant it equals at λ = 1) the registered classes declare."""
    return [(name, float(lam), other)
            for name, cls in RESIDUALS.items() for lam, other in getattr(cls, "same_as", {}).items()]


def variant_order(name: str, lam: float = 1.0) -> tuple:
    """Sort key for tables and figures: the baseline first, then the registry's order, then other names; λ last."""
    names = list(RESIDUALS)
    return (name != BASELINE, names.index(name) if name in names else len(names), name, lam)


def describe_variants() -> str:
    """One line for ``--skip``'s help: every registered name."""
    return f"residual variant: {', '.join(RESIDUALS)}, or package.module:ClassName"


def describe_lambdas() -> str:
    """One line for ``--lambda``'s help: which variants take which λ."""
    rules = {"positive": "> 0", "integer": "integer ≥ 1"}
    parts = []
    for rule, text in rules.items():
        names = [n for n, c in RESIDUALS.items() if getattr(c, "lambda_rule", "one") == rule]
        if names:
            parts.append(f"{', '.join(names)}: {text}")
    return f"λ of the residual variant ({'; '.join(parts)}; the others take none)"


__all__ = [
    "BASELINE",
    "RESIDUALS",
    "BadLambda",
    "FinalNorm",
    "Place",
    "ResidualBlock",
    "StackEnds",
    "UnknownVariant",
    "build_residual",
    "build_stack_ends",
    "check_lambda",
    "ends_with_norm",
    "identities",
    "register_residual",
    "residual_class",
    "same_model",
    "variant_order",
    "Skip",
    "PostLN",
    "PreLN",
    "ExpandedSkip",
    "ExpandedSkipLN",
    "RecursiveSkipLN",
    "ReZero",
    "LayerScale",
    "PeriLN",
    "DeepNorm",
    "Admin",
    "B2T",
    "ResiDual",
    "Highway",
    "HyperConnections",
    "StaticHyperConnections",
]

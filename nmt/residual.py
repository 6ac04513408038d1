"""Residual blocks: how a sublayer's input x and output F(x) are combined.

Every sublayer of the Transformer (self-attention, cross-attention, feed-forward) is wrapped by one
residual block. The block is the one thing the skip-connection variants of Liu et al. (COLING 2020,
"Rethinking Skip Connection with Layer Normalization in Transformers and ResNets") change, so it is the
one thing this module defines. A block is called as ``block(x, sublayer)``: it calls ``sublayer``
exactly once and returns the combination. ``F(x)`` below always means the sublayer's output after
residual dropout, which every variant applies identically (``self.dropout``) before combining.

Variants are chosen by name (``--skip NAME``) from a registry::

    @register_residual("my_skip")
    class MySkip(ResidualBlock):
        '''y = x + 0.5 F(x)'''
        def forward(self, x, sublayer):
            return x + 0.5 * self.dropout(sublayer(x))

A class that lives outside the project needs no registration: ``--skip package.module:ClassName``
imports it. It must take the constructor ``(d_model, lam=1.0, dropout=0.0)``.

What the stack around a block needs is declared on the class, never inferred from its name: a block
with ``final_norm = True`` (pre-norm) makes the encoder and decoder end with a LayerNorm, since
their output is otherwise an unnormalised sum of every sublayer's output.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable

from torch import Tensor, nn

Sublayer = Callable[[Tensor], Tensor]

RESIDUALS: dict[str, type[nn.Module]] = {}
"""Registered residual blocks, by the name ``--skip`` accepts."""


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
    """Base class: holds the residual dropout and validates λ.

    Subclasses implement ``forward(x, sublayer)``. ``lambda_rule`` says which λ a variant accepts:
    ``"one"`` (the variant has no λ: only 1, the default, is accepted), ``"positive"`` (any real
    number > 0) or ``"integer"`` (an integer ≥ 1, e.g. a number of recursion steps).
    """

    final_norm: bool = False
    """True when the encoder and decoder stacks must end with a LayerNorm (pre-norm blocks)."""
    lambda_rule: str = "one"
    registered_name: str = ""

    def __init__(self, d_model: int, lam: float = 1.0, dropout: float = 0.0):
        super().__init__()
        self.d_model = d_model
        self.lam = self.check_lambda(lam)
        self.dropout = nn.Dropout(dropout)

    @classmethod
    def check_lambda(cls, lam: float) -> float:
        """Return λ in the type the variant uses, or raise ValueError saying what it accepts."""
        name = cls.registered_name or cls.__qualname__
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam):
            raise ValueError(f"λ must be a finite number, got {lam!r}")
        if cls.lambda_rule == "one":
            if lam != 1:
                raise ValueError(
                    f"skip variant {name!r} has no λ (it is fixed at 1), got λ={lam:g}; "
                    f"use a variant with λ such as 'xskip', 'xskip_ln' or 'rskip_ln'"
                )
            return 1.0
        if cls.lambda_rule == "positive":
            if lam <= 0:
                raise ValueError(f"skip variant {name!r} needs λ > 0, got λ={lam:g}")
            return float(lam)
        if cls.lambda_rule == "integer":
            if lam < 1 or lam != int(lam):
                raise ValueError(
                    f"skip variant {name!r} needs an integer λ ≥ 1 (the number of recursion steps), got λ={lam:g}"
                )
            return int(lam)
        raise TypeError(f"{cls.__qualname__}.lambda_rule must be 'one', 'positive' or 'integer'")

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, lam={self.lam:g}"


@register_residual("skip")
class Skip(ResidualBlock):
    """Plain skip connection, no normalisation at all:  y = x + F(x)."""

    def forward(self, x: Tensor, sublayer: Sublayer) -> Tensor:
        return x + self.dropout(sublayer(x))


@register_residual("post_ln")
class PostLN(ResidualBlock):
    """Post-LN, the original Transformer block (Vaswani et al. 2017):  y = LN(x + F(x))."""

    def __init__(self, d_model: int, lam: float = 1.0, dropout: float = 0.0):
        super().__init__(d_model, lam, dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, sublayer: Sublayer) -> Tensor:
        return self.norm(x + self.dropout(sublayer(x)))


@register_residual("pre_ln")
class PreLN(ResidualBlock):
    """Pre-LN:  y = x + F(LN(x)).  The stack ends with a final LayerNorm."""

    final_norm = True

    def __init__(self, d_model: int, lam: float = 1.0, dropout: float = 0.0):
        super().__init__(d_model, lam, dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, sublayer: Sublayer) -> Tensor:
        return x + self.dropout(sublayer(self.norm(x)))


@register_residual("xskip")
class ExpandedSkip(ResidualBlock):
    """Expanded skip (xSkip), λ fixed and not learned:  y = λ·x + F(x).  λ > 0; λ = 1 is ``skip``."""

    lambda_rule = "positive"

    def forward(self, x: Tensor, sublayer: Sublayer) -> Tensor:
        return self.lam * x + self.dropout(sublayer(x))


@register_residual("xskip_ln")
class ExpandedSkipLN(ResidualBlock):
    """Expanded skip with LayerNorm (xSkip+LN):  y = LN(λ·x + F(x)).  λ > 0; λ = 1 is ``post_ln``."""

    lambda_rule = "positive"

    def __init__(self, d_model: int, lam: float = 1.0, dropout: float = 0.0):
        super().__init__(d_model, lam, dropout)
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

    def __init__(self, d_model: int, lam: float = 1.0, dropout: float = 0.0):
        super().__init__(d_model, lam, dropout)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(self.lam))

    def forward(self, x: Tensor, sublayer: Sublayer) -> Tensor:
        y = self.norms[0](x + self.dropout(sublayer(x)))
        for norm in self.norms[1:]:
            y = norm(x + y)
        return y


def residual_class(name: str) -> type[nn.Module]:
    """The block class for ``--skip name``: a registered name, or ``package.module:ClassName``."""
    if ":" in name:
        module_name, _, class_name = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ValueError(f"--skip {name}: cannot import module {module_name!r} ({e})") from None
        cls = getattr(module, class_name, None)
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ValueError(f"--skip {name}: {module_name!r} has no torch.nn.Module class {class_name!r}")
        return cls
    if name not in RESIDUALS:
        known = ", ".join(sorted(RESIDUALS))
        raise ValueError(f"unknown skip variant {name!r}; known: {known} (or package.module:ClassName)")
    return RESIDUALS[name]


def check_lambda(name: str, lam: float) -> float:
    """Validate λ for a variant without building it (for early, clear CLI errors)."""
    cls = residual_class(name)
    check = getattr(cls, "check_lambda", None)
    return check(lam) if check is not None else lam


def build_residual(name: str, d_model: int, lam: float = 1.0, dropout: float = 0.0) -> nn.Module:
    """Build the residual block ``name`` (see ``residual_class``) for a model of width ``d_model``."""
    return residual_class(name)(d_model, lam=lam, dropout=dropout)


def needs_final_norm(block: nn.Module) -> bool:
    """Whether a stack of such blocks must end with a LayerNorm (declared by the block class)."""
    return bool(getattr(block, "final_norm", False))


__all__ = [
    "RESIDUALS",
    "ResidualBlock",
    "build_residual",
    "check_lambda",
    "needs_final_norm",
    "register_residual",
    "residual_class",
    "Skip",
    "PostLN",
    "PreLN",
    "ExpandedSkip",
    "ExpandedSkipLN",
    "RecursiveSkipLN",
]

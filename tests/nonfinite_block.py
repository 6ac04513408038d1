"""A residual block for fault tests: Post-LN whose output turns to NaN on chosen training batches.

``--skip nonfinite_block:NaNOnBatches`` (with ``tests/`` on PYTHONPATH) trains exactly like ``post_ln``
except that on the training forward passes listed in ``$NMT_TEST_NAN_BATCHES`` (1-based, counted in
this process: ``"3,4,12-"`` = the 3rd, 4th and every pass from the 12th) every block's output is NaN,
so the loss and every gradient of that batch are NaN, through the real forward and backward. Evaluation
passes (``model.eval()``) are never touched.
"""

import os

from torch import Tensor

from nmt.residual import PostLN, Sublayer


def _batches(spec: str):
    ranges = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        lo, dash, hi = part.partition("-")
        ranges.append((int(lo), int(hi) if hi else (10**12 if dash else int(lo))))
    return ranges


class NaNOnBatches(PostLN):
    def __init__(self, d_model: int, lam: float = 1.0, dropout: float = 0.0):
        super().__init__(d_model, lam, dropout)
        self.calls = 0
        self.nan_at = _batches(os.environ.get("NMT_TEST_NAN_BATCHES", ""))

    def forward(self, x: Tensor, sublayer: Sublayer) -> Tensor:
        y = super().forward(x, sublayer)
        if not self.training:
            return y
        self.calls += 1
        if any(lo <= self.calls <= hi for lo, hi in self.nan_at):
            y = y * float("nan")
        return y

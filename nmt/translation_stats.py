"""A validation or test pass's per-sentence results, gathered from every process by torchmetrics.

Under data parallelism each process translates its share of a split; the evaluation sampler repeats batches so
that every process gets as many. ``TranslationStats`` (a ``torchmetrics.Metric``) collects, per sentence, its
number in the split, its greedy hypothesis, its summed label-smoothed loss and NLL, its target tokens and how many
of them the model predicts (argmax); torchmetrics concatenates these states over the processes. ``compute`` counts
each sentence once (by its number) and sums the losses exactly (``math.fsum``), so loss, perplexity, token accuracy
and BLEU are the same on every process and the same as one process translating the whole split.

Corpus BLEU itself is computed by the caller from the gathered hypotheses with sacreBLEU, as evaluate.py does;
torchmetrics' SacreBLEUScore tokenizes and detokenizes differently from what evaluate.py reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


@dataclass
class SplitResult:
    """A whole split's numbers, each sentence counted once."""

    ids: list[int]  # sentence numbers, ascending
    hypotheses: list[list[int]]  # token ids, in the order of ``ids``
    loss: float  # summed label-smoothed loss
    nll: float  # summed negative log-likelihood
    tokens: float  # target tokens (EOS included)
    correct: float  # target tokens the model ranks first

    @property
    def loss_per_token(self) -> float:
        return self.loss / self.tokens

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.nll / self.tokens, 100.0))

    @property
    def accuracy(self) -> float:
        return self.correct / self.tokens


class TranslationStats(Metric):
    """Per-sentence results of one pass over a split (see the module docstring)."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("ids", default=[], dist_reduce_fx="cat")  # (n,) sentence numbers
        self.add_state("lengths", default=[], dist_reduce_fx="cat")  # (n,) hypothesis lengths
        self.add_state("tokens", default=[], dist_reduce_fx="cat")  # (Σ lengths,) hypothesis token ids, concatenated
        self.add_state("sums", default=[], dist_reduce_fx="cat")  # (n, 4) float64: loss, nll, tokens, correct

    def update(self, ids: Tensor, hypotheses: list[list[int]], sums: Tensor) -> None:
        """One batch: sentence numbers (B,), hypotheses, and per-sentence sums (B, 4) (see ``sentence_sums``)."""
        self.ids.append(ids.long())
        self.lengths.append(torch.tensor([len(h) for h in hypotheses], dtype=torch.long, device=ids.device))
        self.tokens.append(torch.tensor([t for h in hypotheses for t in h], dtype=torch.long, device=ids.device))
        self.sums.append(sums.double())

    def compute(self) -> SplitResult | None:
        """The split's result, or None when no process evaluated any sentence."""
        if not isinstance(self.ids, Tensor) and not self.ids:
            return None
        ids, lengths, tokens, sums = (dim_zero_cat(s).cpu() for s in (self.ids, self.lengths, self.tokens, self.sums))
        hyps = tokens.split(lengths.tolist())
        by_id = {}
        for i, hyp, row in zip(ids.tolist(), hyps, sums.tolist()):  # a sentence repeated for padding counts once
            by_id[i] = (hyp.tolist(), row)
        order = sorted(by_id)
        loss, nll, ntok, correct = (math.fsum(by_id[i][1][k] for i in order) for k in range(4))  # exact in any order
        return SplitResult(order, [by_id[i][0] for i in order], loss, nll, ntok, correct)

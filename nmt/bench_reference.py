"""The reference of ``python -m nmt.bench``: a plain PyTorch training loop over ``torch.nn.Transformer``.

Same sizes as the project's model (d_model, heads, d_ff, encoder and decoder layers, vocabulary), one
embedding matrix shared by source, target and the output projection, sinusoidal positions, the same
label-smoothed loss through ``F.cross_entropy(label_smoothing=ε, ignore_index=pad, reduction="sum")``
divided by the batch's non-padding target tokens, and Adam with the same settings. No Lightning, no
pluggable residual blocks: ``norm_first`` is True for a pre-norm variant (one whose class declares that
its stack ends with a LayerNorm, ``pre_ln`` among the paper's) and False otherwise (Post-LN), the nearest
torch has. Differences that remain, stated so the ratio is read right: ``nn.Transformer`` always
ends both stacks with a LayerNorm (ours only for pre-norm variants: 2·2·d parameters, negligible work);
like ours, its attention packs W^Q, W^K, W^V into one in-projection; its initialisation differs (speed only).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ReferenceTransformer(nn.Module):
    """``nn.Transformer`` with tied token embeddings scaled by √d, sinusoidal positions and a tied output projection."""

    def __init__(self, vocab_size: int, d_model: int, n_heads: int, d_ff: int, encoder_layers: int, decoder_layers: int,
                 dropout: float = 0.1, pad_id: int = 0, norm_first: bool = False, max_positions: int = 1024):
        super().__init__()
        self.pad_id, self.scale = pad_id, math.sqrt(d_model)
        self.tokens = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        nn.init.normal_(self.tokens.weight, std=d_model**-0.5)
        with torch.no_grad():
            self.tokens.weight[pad_id].zero_()
        position = torch.arange(max_positions, dtype=torch.float32).unsqueeze(1)
        angle = position * torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_positions, d_model)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)
        self.register_buffer("pe", pe, persistent=False)
        self.dropout = nn.Dropout(dropout)
        self.transformer = nn.Transformer(d_model, n_heads, encoder_layers, decoder_layers, d_ff, dropout,
                                          batch_first=True, norm_first=norm_first)

    def _embed(self, ids: Tensor) -> Tensor:
        return self.dropout(self.tokens(ids) * self.scale + self.pe[: ids.size(1)])

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        src_pad, tgt_pad = src == self.pad_id, tgt_in == self.pad_id
        T = tgt_in.size(1)  # boolean masks throughout: True = may not attend (a future position, padding)
        causal = torch.ones(T, T, dtype=torch.bool, device=src.device).triu(1)
        h = self.transformer(self._embed(src), self._embed(tgt_in), tgt_mask=causal, src_key_padding_mask=src_pad,
                             tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad, tgt_is_causal=True)
        return F.linear(h, self.tokens.weight)


def reference_loss(logits: Tensor, target: Tensor, ntokens: int, epsilon: float = 0.1, pad_id: int = 0) -> Tensor:
    """Label-smoothed cross-entropy summed over non-padding targets, divided by their number."""
    loss = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), ignore_index=pad_id,
                           label_smoothing=epsilon, reduction="sum")
    return loss / ntokens


def reference_step_fn(model: ReferenceTransformer, lr: float, betas=(0.9, 0.98), eps: float = 1e-9,
                      epsilon: float = 0.1, autocast_dtype: torch.dtype | None = None, warmup: int = 0):
    """A function ``step(batch) -> loss`` doing one full update (forward, backward, Adam) of ``model``.

    The learning rate follows Vaswani et al.'s schedule, linear warm-up over ``warmup`` updates to ``lr`` then
    decay with 1/√step, as train.py's does, so that the loops' losses after the same batches are comparable.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=betas, eps=eps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, math.sqrt(warmup / (s + 1))) if warmup > 0 else 1.0)
    device_type = next(model.parameters()).device.type

    def step(batch: dict) -> Tensor:
        with torch.autocast(device_type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
            logits = model(batch["src"], batch["tgt_in"])
        loss = reference_loss(logits, batch["tgt_out"], batch["ntokens"], epsilon, model.pad_id)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        return loss.detach()

    return step

"""nmt.lit.TranslationModule: what one update optimises.

An update's gradient is that of the loss per target token over the whole update, however its tokens are
split into accumulated batches (and processes: tests/test_ddp.py trains with them).
"""

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from nmt.config import MonitorSettings, OptimSettings
from nmt.data.datamodule import collate
from nmt.lit import TranslationModule
from nmt.model import model_config

VOCAB = 60


def _examples(rng, n, src_len, tgt_len, first_id):
    return [(first_id + i, rng.integers(4, VOCAB, src_len[i]), rng.integers(4, VOCAB, tgt_len[i])) for i in range(n)]


def _gradients(batches: list[dict], accumulate: int) -> dict[str, torch.Tensor]:
    """The gradient of the first update of a fresh module (no dropout, learning rate 0) over ``batches``."""
    torch.manual_seed(3)
    cfg = model_config("tiny", VOCAB, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    module = TranslationModule(cfg, OptimSettings(lr=0.0), monitor=MonitorSettings(log_every=10**9))
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=1, accumulate_grad_batches=accumulate, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None, shuffle=False))
    # Lightning does not clear the gradients after the last update: they are the update's, as the optimizer saw them
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def test_accumulated_batches_weigh_every_target_token_alike():
    rng = np.random.default_rng(0)
    short = _examples(rng, 2, [3, 5], [2, 3], 0)  # 2 sentences, 7 target tokens with EOS
    long = _examples(rng, 3, [9, 7, 8], [12, 10, 11], 2)  # 3 sentences, 36 target tokens
    two_batches = _gradients([collate(short), collate(long)], accumulate=2)
    one_batch = _gradients([collate(short + long)], accumulate=1)
    assert two_batches.keys() == one_batch.keys() and len(one_batch) > 10
    assert all(g.abs().sum() > 0 for g in one_batch.values())  # a real gradient everywhere: zeros would agree too
    for name, g in one_batch.items():
        # the mean over all 43 tokens, not the mean of the two batches' means (which weighs a short-batch token 5× more)
        torch.testing.assert_close(two_batches[name], g, rtol=1e-4, atol=1e-6, msg=name)


class _PerRankData(TranslationModule):
    """Each process trains on its own batch (process 0 the short one, process 1 the long one)."""

    def train_dataloader(self):
        return DataLoader([self.batches[self.global_rank]], batch_size=None, shuffle=False)

    def on_train_end(self) -> None:
        if self.global_rank == 0:
            torch.save({n: p.grad for n, p in self.named_parameters() if p.grad is not None}, self.out)


def test_two_processes_weigh_every_target_token_alike(tmp_path):
    rng = np.random.default_rng(0)
    short = _examples(rng, 2, [3, 5], [2, 3], 0)
    long = _examples(rng, 3, [9, 7, 8], [12, 10, 11], 2)
    torch.manual_seed(3)
    cfg = model_config("tiny", VOCAB, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    module = _PerRankData(cfg, OptimSettings(lr=0.0), monitor=MonitorSettings(log_every=10**9))
    module.batches, module.out = [collate(short), collate(long)], str(tmp_path / "grads.pt")  # pickled to the processes
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, use_distributed_sampler=False)
    trainer.fit(module)
    two_processes = torch.load(tmp_path / "grads.pt")
    one_batch = _gradients([collate(short + long)], accumulate=1)
    assert two_processes.keys() == one_batch.keys() and all(g.abs().sum() > 0 for g in one_batch.values())
    for name, g in one_batch.items():
        torch.testing.assert_close(two_processes[name], g, rtol=1e-4, atol=1e-6, msg=name)

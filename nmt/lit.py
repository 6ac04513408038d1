"""Training and validation of a ``nmt.model.Transformer`` as a LightningModule.

- Loss: label-smoothed cross-entropy (Szegedy et al. 2016; ε = 0.1 in Vaswani et al.), padding
  ignored, summed over the batch and divided by its number of target tokens. Perplexity is
  exp(NLL per token) of the *unsmoothed* negative log-likelihood, never of the smoothed loss.
- Optimiser: Adam (β 0.9, 0.98, ε 1e-9) with an explicit peak learning rate, linear warm-up, then
  inverse square-root decay: lr(step) = peak · min(step / warmup, √(warmup / step)). For the paper's
  d_model^-½ · warmup^-½ schedule set the peak to that value (7.0e-4 for base with 4,000 warm-up steps).
- Logged every ``log_every`` updates: loss, NLL, perplexity, learning rate, gradient norm (before
  clipping) and non-padding target tokens per second. Validation: loss, perplexity, token accuracy (the share of
  target tokens the model ranks first) and the BLEU of cached greedy decoding (sacreBLEU on detokenized output
  against the raw references).
- An update whose loss or gradient is not finite is skipped, never applied, and counted
  (``train/skipped_steps``, in checkpoints); ``max_nonfinite`` in a row stop the run as diverged.
  See ``optimizer_step`` for what a skipped update does and does not count as.
- Under data parallelism each rank decodes its share; hypotheses and per-sentence losses are gathered by a
  torchmetrics metric (``nmt.translation_stats``) with their sentence numbers, duplicates from sampler padding
  dropped, and loss and BLEU computed once on the whole set (the same on every rank, and as in one process).
  Token counts (the effective batch, tokens/s, tokens seen) are summed over ranks.
"""

from __future__ import annotations

import math
import time

import lightning as L
import sacrebleu
import torch
import torch.nn.functional as F
from torch import Tensor

from nmt.config import MonitorSettings, OptimSettings, ValidationSettings
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from nmt.decode import greedy_decode
from nmt.model import ModelConfig, Transformer
from nmt.progress import format_row
from nmt.translation_stats import TranslationStats


def label_smoothed_nll(logits: Tensor, target: Tensor, epsilon: float, pad_id: int) -> tuple[Tensor, Tensor]:
    """Summed label-smoothed loss and summed NLL over the non-padding positions of ``target``.

    loss = (1 − ε)·(−log p(y)) + ε·mean_v(−log p(v)): the target distribution puts 1 − ε on the
    reference token and spreads ε uniformly over the vocabulary.
    """
    lprobs = F.log_softmax(logits.float(), dim=-1)
    keep = target != pad_id
    nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    smooth = -lprobs.mean(dim=-1)
    nll_sum = nll[keep].sum()
    loss = (1.0 - epsilon) * nll_sum + epsilon * smooth[keep].sum()
    return loss, nll_sum


def sentence_losses(logits: Tensor, target: Tensor, epsilon: float, pad_id: int) -> Tensor:
    """Per sentence (row of ``target``): the summed label-smoothed loss, the summed NLL, the number of non-padding
    target tokens and how many of them the model ranks first (argmax), as a (B, 4) tensor. The same loss as
    ``label_smoothed_nll``, not summed over the batch, so that validation can count every sentence once however
    the batches were shared out.
    """
    lprobs = F.log_softmax(logits.float(), dim=-1)
    pad = target == pad_id
    nll = (-lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)).masked_fill(pad, 0.0).sum(-1)
    smooth = (-lprobs.mean(dim=-1)).masked_fill(pad, 0.0).sum(-1)
    correct = ((lprobs.argmax(dim=-1) == target) & ~pad).sum(-1).float()
    return torch.stack([(1.0 - epsilon) * nll + epsilon * smooth, nll, (~pad).sum(-1).float(), correct], dim=1)


GRADIENT_TOKENS = 1024.0  # training_step's backward runs on the summed loss / this; see _per_token_gradients


def inverse_sqrt_schedule(warmup: int):
    """Multiplier of the peak learning rate at optimizer step ``s`` (0-based)."""

    def factor(step: int) -> float:
        s = step + 1
        return min(s / warmup, math.sqrt(warmup / s)) if warmup > 0 else 1.0 / math.sqrt(s)

    return factor


class TranslationModule(L.LightningModule):
    """A Transformer with its loss, optimiser, schedule and validation.

    Settings come as the dataclasses they are (``nmt.model.ModelConfig``, ``nmt.config.OptimSettings``,
    ``ValidationSettings``, ``MonitorSettings``); checkpoints store them as plain dicts in their hyper-parameters
    (``model``, ``optim``, ``decoding``, ``log_every``), readable without this package's classes. Every checkpoint
    also carries ``spm_model`` (the tokenizer's bytes) and ``run_config`` (the run's TrainConfig as a dict), so that
    a checkpoint file alone can translate and say how it was trained. ``echo`` prints a line (one per validation,
    and per training row with ``monitor.echo_training``); None prints nothing.
    """

    def __init__(self, model: ModelConfig, optim: OptimSettings = OptimSettings(),
                 decoding: ValidationSettings = ValidationSettings(), monitor: MonitorSettings = MonitorSettings(),
                 spm_model: bytes | None = None, run_config: dict | None = None, echo=None):
        super().__init__()
        self.save_hyperparameters({"model": model.to_dict(), "optim": optim.to_dict(), "decoding": decoding.to_dict(),
                                   "log_every": monitor.log_every})
        self.model = Transformer(model)
        self.optim, self.decoding, self.monitor = optim, decoding, monitor
        self.spm_model, self.run_config, self.echo = spm_model, run_config, echo
        self.tokens_seen = 0  # non-padding target tokens trained on by all processes over the run (in checkpoints)
        self._tokens_unsynced = 0  # ... by this process since tokens_seen was last brought up to date (_sync_tokens)
        self.eval_stats = TranslationStats()  # the current validation or test pass, gathered over processes
        self._tokens_since_log = 0
        self._update_tokens = 0
        self._pending: dict = {}
        self._last_step = 0
        self._time_of_log: float | None = None
        self.test_result: dict | None = None
        self.nonfinite_skipped = 0  # updates skipped for a non-finite loss or gradient over the run (in checkpoints)
        self.nonfinite_streak = 0  # of them, how many in a row up to the last update (in checkpoints)
        self._skipped_update = False

    # ------------------------------------------------------------------ training
    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        return self.model(src, tgt_in)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        logits = self.model(batch["src"], batch["tgt_in"])
        loss_sum, nll_sum = label_smoothed_nll(logits, batch["tgt_out"], self.optim.label_smoothing, PAD_ID)
        ntokens = batch["ntokens"]
        loss = loss_sum / ntokens  # logged: per target token of this batch
        self._tokens_since_log += ntokens
        self._update_tokens += ntokens
        self._tokens_unsynced += ntokens
        if self._logging_this_update():
            self._pending = {
                "train/loss": loss.detach(),
                "train/nll": nll_sum.detach() / ntokens,
                "train/lr": self.lr_schedulers().get_last_lr()[0],
            }
        self.log("loss", loss.detach(), prog_bar=True, logger=False, on_step=True, on_epoch=False)
        # backward of the summed loss (over a fixed number of tokens, to keep magnitudes near 1): the update's
        # gradients become those of the mean per target token of the whole update in _per_token_gradients
        return loss_sum / GRADIENT_TOKENS

    def _logging_this_update(self) -> bool:
        """True while computing an update that completes a logging interval (update log_every, 2·log_every, …)."""
        return (self.trainer.global_step + 1) % self.monitor.log_every == 0

    def _per_token_gradients(self) -> None:
        """Scale the update's gradients to those of the label-smoothed loss summed over every target token of
        the update, on every process and in every accumulated batch, divided by their number (as fairseq).

        Each batch's backward ran on ``loss_sum / GRADIENT_TOKENS``; Lightning divided that by
        ``accumulate_grad_batches`` (A) and DDP averaged the gradients over the W processes, so the gradients
        hold Σ ∇loss_sum / (GRADIENT_TOKENS·A·W). Multiplying by GRADIENT_TOKENS·A·W / N, with N the update's
        target tokens summed over the processes (an all-reduce on the device: no host synchronisation), gives
        Σ ∇loss_sum / N. Averaging per-batch means instead would weight a token of a short batch more than one of
        a long batch. Runs before gradient clipping and the gradient-norm logs.
        """
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if not grads or not self._update_tokens:
            return
        world, accumulate = self.trainer.world_size, self.trainer.accumulate_grad_batches
        if world > 1:
            total = torch.tensor(float(self._update_tokens), device=self.device)
            total = self.trainer.strategy.reduce(total, reduce_op="sum")
            scale = (GRADIENT_TOKENS * accumulate * world) / total
        else:
            scale = GRADIENT_TOKENS * accumulate / self._update_tokens
        torch._foreach_mul_(grads, scale)

    def on_before_optimizer_step(self, optimizer) -> None:
        self._per_token_gradients()
        if self._logging_this_update():
            grads = [p.grad for p in self.parameters() if p.grad is not None]
            self._pending["train/grad_norm"] = torch.nn.utils.get_total_norm(grads)
        # the gradients are reduced over the processes by now: the first one logs them
        if self.trainer.global_step < self.monitor.log_layer_grads and self.trainer.is_global_zero:
            self._log_layer_grads(self.trainer.global_step + 1)

    def _log_layer_grads(self, step: int) -> None:
        """Log the gradient 2-norm of each encoder and decoder layer (``grad_norm/encoder.3``): one host sync."""
        names, norms = [], []
        for side in ("encoder", "decoder"):
            for i, layer in enumerate(getattr(self.model, side).layers):
                grads = [p.grad for p in layer.parameters() if p.grad is not None]
                if grads:
                    names.append(f"grad_norm/{side}.{i}")
                    norms.append(torch.nn.utils.get_total_norm(grads))
        if not norms:
            return
        row = dict(zip(names, torch.stack(norms).tolist()))
        for logger in self.loggers:
            logger.log_metrics(row, step=step)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        """One update, skipped when its loss or gradient is not finite.

        The closure (training_step and backward of the update's last batch) runs here; then one host
        synchronisation checks that the loss and every gradient element are finite (under data
        parallelism the gradients are already all-reduced and the decision is reduced too, so every
        process decides alike); only then does ``optimizer.step()`` run, with Lightning's
        on_before_optimizer_step hook and gradient clipping. A skipped update

        - changes nothing: no optimizer step, so the weights and Adam's moments and step count are
          untouched, and ``lr_scheduler_step`` does not advance the learning-rate schedule;
        - still counts as a step of ``trainer.global_step`` (Lightning counts calls of this hook, not what
          the optimizer did): --max-steps and the logging, saving and validation intervals count it, and
          after s skipped updates the learning rate at global step g is the schedule's value at g − s;
          its target tokens are not added to ``tokens_seen`` (tokens trained on);
        - is counted in ``nonfinite_skipped`` (logged as train/skipped_steps, kept in checkpoints, reported
          in results.json). ``max_nonfinite`` in a row (0: no limit) raise ``TrainingStopped`` as diverged
          before anything is saved, so the checkpoints keep the last state reached by finite updates.

        With fp16 loss scaling the GradScaler skips non-finite steps by design (and lowers its scale):
        that path is Lightning's own, unchanged, and its skips are not counted.
        """
        if optimizer_closure is None or getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            self._skipped_update = False
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        loss = optimizer_closure()
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        ok = self._all_finite(loss, grads)
        self._skipped_update = not ok
        if ok:
            self.nonfinite_streak = 0
            optimizer.step()
        else:
            self._skip_update(grads)

    def _all_finite(self, loss: Tensor | None, grads: list[Tensor]) -> bool:
        """Whether the loss and every gradient element are finite on every process: the update's one host sync."""
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        if grads:  # the largest |element| (∞-norm): NaN propagates, and unlike the 2-norm it cannot overflow
            finite = torch.isfinite(torch.nn.utils.get_total_norm(grads, norm_type=math.inf))
        if loss is not None:
            finite = finite & torch.isfinite(loss.detach())
        return self.trainer.strategy.reduce_boolean_decision(bool(finite), all=True)

    def _skip_update(self, grads: list[Tensor]) -> None:
        """Count a skipped non-finite update; raise TrainingStopped (diverged) at ``max_nonfinite`` in a row."""
        step = self.trainer.global_step + 1  # the update being made; global_step counts it once this hook returns
        self.nonfinite_skipped += 1
        self.nonfinite_streak += 1
        self._tokens_unsynced -= self._update_tokens
        if self._logging_this_update():
            self._pending["train/grad_norm"] = torch.nn.utils.get_total_norm(grads)
        limit = self.monitor.max_nonfinite
        if self.echo is not None:
            self.echo(f"update {step}: non-finite loss or gradient, update skipped ({self.nonfinite_streak} in a row"
                      + (f", the run stops at {limit}" if limit else "") + f"; {self.nonfinite_skipped} in all)")
        if limit and self.nonfinite_streak >= limit:
            from nmt.signals import TrainingStopped

            first = step - self.nonfinite_streak + 1
            for logger in self.loggers:
                logger.log_metrics({"train/skipped_steps": float(self.nonfinite_skipped)}, step=step)
                logger.save()
            raise TrainingStopped(
                f"training diverged: updates {first}–{step} ({self.nonfinite_streak} in a row, --max-nonfinite "
                f"{limit}) had a non-finite loss or gradient; none was applied and nothing was saved at the stop, "
                "so the checkpoints hold the last state reached by finite updates",
                reason="diverged", step=step, exit_status=3, diverged_at_step=first,
            )

    def lr_scheduler_step(self, scheduler, metric) -> None:
        """Advance the learning-rate schedule only after an update that was applied (see ``optimizer_step``)."""
        if not self._skipped_update:
            super().lr_scheduler_step(scheduler, metric)

    def on_train_start(self) -> None:
        if self.model.needs_data_init:  # never on resume: the flag is set in the restored weights
            self._data_dependent_init()
        self._last_step = self.trainer.global_step
        if self.trainer.is_global_zero:  # resumed: the interrupted process's rows after the checkpoint are redone
            for logger in self.loggers:
                if hasattr(logger, "drop_after"):
                    logger.drop_after(self.trainer.global_step)

    def _data_dependent_init(self) -> None:
        """The residual blocks' one-time initialisation from data (Admin), before the first update, on the first
        batch of the seeded epoch-0 order of one process: the same batch on every process, whatever their number.
        Rank 0's result is then sent to the others, so that no process can differ."""
        batch = self.trainer.datamodule.first_training_batch()
        self.model.data_dependent_init(batch["src"].to(self.device), batch["tgt_in"].to(self.device))
        if self.trainer.world_size > 1:
            import torch.distributed as dist

            for tensor in self.model.state_dict().values():
                dist.broadcast(tensor, src=0)
        if self.echo is not None:
            self.echo(f"data-dependent initialisation of the residual blocks on the first training batch "
                      f"({batch['src'].size(0)} sentences)")

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        step = self.trainer.global_step
        if step == self._last_step:  # accumulating gradients: no update made yet
            return
        self._last_step = step
        tokens, self._update_tokens = self._update_tokens, 0
        if step % self.monitor.log_every or not self._pending:
            return
        now = time.perf_counter()
        row = {k: float(v) for k, v in self._pending.items()}  # the only host synchronisation, once per interval
        tokens, since_log = self._sync_tokens(tokens, self._tokens_since_log)  # summed over all processes
        row["train/ppl"] = math.exp(min(row["train/nll"], 100.0))
        row["train/tgt_tokens"] = float(tokens)  # the effective batch: target tokens of this update on all processes
        row["train/skipped_steps"] = float(self.nonfinite_skipped)
        row["train/tokens_seen"] = float(self.tokens_seen)
        row["epoch"] = float(self.current_epoch)
        if self._time_of_log is not None:
            row["train/tok_per_s"] = since_log / (now - self._time_of_log)
        self._time_of_log, self._tokens_since_log, self._pending = now, 0, {}
        self.report(row, step)

    def _sync_tokens(self, *counts: int) -> list[int]:
        """Bring ``tokens_seen`` up to date with every process's tokens, and return ``counts`` summed over processes.

        One all-reduce: every process calls this at the same points (logging updates and checkpoints).
        """
        values = torch.tensor([self._tokens_unsynced, *counts], dtype=torch.long, device=self.device)
        if self.trainer.world_size > 1:
            values = self.trainer.strategy.reduce(values, reduce_op="sum")
        total, *summed = values.tolist()
        self.tokens_seen += total
        self._tokens_unsynced = 0
        return summed

    def report(self, row: dict, step: int) -> None:
        """Write one row of metrics, labelled with the number of updates done, to every logger."""
        for logger in self.loggers:
            logger.log_metrics(row, step=step)
            logger.save()
        if self.echo is not None and (self.monitor.echo_training or not any(k.startswith("train/") for k in row)):
            self.echo(format_row(step, self.trainer.max_steps, self.current_epoch, row))

    def on_train_epoch_start(self) -> None:
        sampler = getattr(self.trainer.datamodule, "train_sampler", None)
        if sampler is not None:  # Lightning never calls set_epoch on a batch sampler
            sampler.set_epoch(self.current_epoch)

    def on_validation_start(self) -> None:
        self._validation_began = time.perf_counter()

    def on_validation_end(self) -> None:
        if self._time_of_log is not None:  # tokens/s counts training time only
            self._time_of_log += time.perf_counter() - self._validation_began

    def configure_optimizers(self):
        o = self.optim
        optimizer = torch.optim.Adam(self.parameters(), lr=o.lr, betas=o.adam_betas, eps=o.adam_eps,
                                     weight_decay=o.weight_decay, fused=o.fused_adam)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, inverse_sqrt_schedule(o.warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Make every checkpoint self-contained: it carries its SentencePiece model and run configuration."""
        if self.spm_model is not None:
            checkpoint["spm_model"] = self.spm_model
        if self.run_config is not None:
            checkpoint["run_config"] = self.run_config
        self._sync_tokens()  # on every process: a checkpoint is made by all of them, though only the first writes it
        checkpoint["tokens_seen"] = self.tokens_seen
        checkpoint["nonfinite"] = {"skipped": self.nonfinite_skipped, "streak": self.nonfinite_streak}
        checkpoint["world_size"] = self.trainer.world_size  # processes (devices × nodes): --resume refuses another

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.tokens_seen, self._tokens_unsynced = checkpoint.get("tokens_seen", 0), 0
        nonfinite = checkpoint.get("nonfinite", {})
        self.nonfinite_skipped, self.nonfinite_streak = nonfinite.get("skipped", 0), nonfinite.get("streak", 0)

    # ------------------------------------------------------------------ validation and test
    def _eval_step(self, batch: dict) -> None:
        logits = self.model(batch["src"], batch["tgt_in"])
        sums = sentence_losses(logits, batch["tgt_out"], self.optim.label_smoothing, PAD_ID)
        hyps = greedy_decode(self.model, batch["src"], BOS_ID, EOS_ID, self.decoding.max_len_a, self.decoding.max_len_b)
        self.eval_stats.update(batch["id"], hyps, sums)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch)

    def _eval_epoch_end(self, split: str) -> dict | None:
        """Score the whole split once, on every process, from every process's sentences (``TranslationStats``:
        each sentence counted once, however the batches were repeated for data parallelism). Every process must
        call this (it gathers); None when the split had no batch at all."""
        result = self.eval_stats.compute()
        self.eval_stats.reset()
        if result is None:
            return None
        data = self.trainer.datamodule
        hyps = data.tokenizer.decode(result.hypotheses)
        refs = [data.references(split)[i] for i in result.ids]
        tokenize = self.decoding.bleu_tokenize  # "none" for a corpus distributed tokenized
        bleu = sacrebleu.BLEU(tokenize=tokenize, force=tokenize == "none")
        score = bleu.corpus_score(hyps, [refs])
        return {
            "loss": result.loss_per_token,
            "ppl": result.perplexity,
            "accuracy": result.accuracy,
            "bleu": score.score,
            "bleu_signature": str(bleu.get_signature()),
            "hypotheses": hyps,
            "sentences": len(result.ids),
        }

    def on_validation_epoch_end(self) -> None:
        result = self._eval_epoch_end("valid")
        if result is None or self.trainer.sanity_checking:
            return
        self.log("val/bleu", result["bleu"], prog_bar=True, logger=False)  # for the progress bar and best.ckpt
        self.report({"val/loss": result["loss"], "val/ppl": result["ppl"], "val/acc": result["accuracy"],
                     "val/bleu": result["bleu"]}, self.trainer.global_step)

    def on_test_epoch_end(self) -> None:
        self.test_result = self._eval_epoch_end("test")
        if self.test_result is not None:
            self.report({"test/loss": self.test_result["loss"], "test/bleu": self.test_result["bleu"]},
                        self.trainer.global_step)

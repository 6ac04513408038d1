"""Training and decoding speed of the project's Transformer, against a plain PyTorch ``nn.Transformer`` loop.

    python -m nmt.bench --data ../shared/data/multi30k-en-de --arch small [--skip rskip_ln --lambda 2]
    python -m nmt.bench --arch base --json bench.json --decode-data ../shared/data/wmt-news-en-de

Training (on the SAME batches, built by the project's pipeline: ``TranslationData`` / ``TokenBatchSampler`` on
``--data`` with ``--max-tokens``; same precision, same thread count), each ``--warmup`` steps then ``--steps``
timed full updates (forward, backward, Adam):

- ``ours``: ``TranslationModule``'s Transformer and label-smoothed loss (``label_smoothed_nll``), Adam as
  ``configure_optimizers`` builds it, in a bare loop (no Lightning);
- ``ours, Lightning``: the same module through a real ``lightning.Trainer.fit`` (no logger, checkpointing,
  validation or progress bar: the Trainer's own per-step overhead is what is left) — what ``train.py`` runs;
- ``plain nn.Transformer``: ``nmt.bench_reference``, the same sizes in a plain PyTorch loop.

Reported per variant: non-padding target tokens/s per device, seconds per step, peak memory (CPU: peak
resident set size of this process, ``VmHWM``, reset through ``/proc/self/clear_refs`` before each phase,
Linux only; GPU: ``torch.cuda.max_memory_allocated``), the ratio to the plain loop, and the model FLOPs
rate (``model_flops``) with, on a GPU of ``PEAK_TFLOPS``, the model FLOPs utilisation (MFU).

Decoding: sentences/s of greedy and beam-4 search on the first ``--decode-lines`` lines of the test split
of ``--decode-data`` (newstest2014 for the WMT news folder), with the model of ``--run`` or an untrained
``--arch`` model whose output length is pinned to the source length (``max_len_a=1, max_len_b=0``), and
peak memory. ``benchmarks/decode_speed.py`` uses the same functions.

Timings are never asserted in tests; run this on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from nmt import atomic
from nmt.config import resolve_precision
from nmt.model import ARCHS
from nmt.progress import quiet_lightning

# Dense bf16 peak of known accelerators (TFLOP/s, without sparsity), matched against the device name.
PEAK_TFLOPS: dict[str, float] = {"H100 SXM": 989.0, "H100": 989.0, "H200": 989.0, "A100": 312.0}


# ---------------------------------------------------------------------------------------------- hardware and memory
def vm_hwm_mb(pid: str = "self") -> float:
    """Peak resident set size of a process in MiB (Linux ``VmHWM``), NaN where unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return vm_hwm_mb()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_tflops(gpu_name: str | None) -> tuple[str, float] | None:
    """(table key, dense bf16 TFLOP/s) for a known GPU name, else None."""
    if not gpu_name:
        return None
    for key, value in PEAK_TFLOPS.items():  # most specific first
        if key.lower() in gpu_name.lower():
            return key, value
    return None


def hardware(device: torch.device, precision: str) -> dict:
    import lightning

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        "cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(), "gpu": gpu,
        "torch": torch.__version__, "lightning": lightning.__version__, "python": platform.python_version(),
        "precision": precision, "device": str(device),
    }


def _log(message: str) -> None:
    print(message, flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------- FLOPs
def model_flops(cfg, src_lens: torch.Tensor, tgt_lens: torch.Tensor) -> float:
    """Model FLOPs of one training step (forward + backward = 3 × forward) on non-padding tokens only.

    Per layer, with d = d_model, f = d_ff, S_i / T_i the non-padding source / target lengths of sentence i
    (a multiply-add is 2 FLOPs):
      encoder, per source token:   2·(4d² + 2df)                    (Q, K, V, O projections; feed-forward)
               per sentence:       4·d·S_i²                         (QKᵀ and AV)
      decoder, per target token:   2·(4d² + 2d² + 2df)              (self-attention Q K V O; cross Q O; FF)
               per source token:   2·2d²                            (cross-attention K, V of the memory)
               per sentence:       4·d·T_i(T_i+1)/2 + 4·d·T_i·S_i   (causal self-attention: the keys a query sees;
                                                                     cross-attention)
      output projection, per target token: 2·d·V (tied with the embedding, but a real matmul).
    Embedding look-ups, LayerNorm, softmax, dropout, the loss and Adam are not counted. Padding is not
    counted (work on padding is not useful work). Summed over all tokens this is the usual 6·N·tokens (N
    the non-embedding parameters) plus the attention terms, adapted to the encoder-decoder split.
    """
    d, f, V = cfg.d_model, cfg.d_ff, cfg.vocab_size
    S, T = src_lens.double(), tgt_lens.double()
    enc = cfg.encoder_layers * (S.sum() * 2 * (4 * d * d + 2 * d * f) + (4 * d * S * S).sum())
    dec = cfg.decoder_layers * (T.sum() * 2 * (6 * d * d + 2 * d * f) + S.sum() * 4 * d * d
                                + (4 * d * T * (T + 1) / 2).sum() + (4 * d * T * S).sum())
    out = T.sum() * 2 * d * V
    return float(3 * (enc + dec + out))


# ---------------------------------------------------------------------------------------------- data
def load_tokenizer(corpus, vocab_size: int, log=lambda m: None):
    """The joint SentencePiece model train.py would train on ``corpus`` (unigram, from the on-disk cache if there)."""
    from nmt.data.corpus import data_root
    from nmt.data.tokenizer import Tokenizer, spm_settings, train_or_load

    files = [corpus.file("train", corpus.src), corpus.file("train", corpus.tgt)]
    hashes = corpus.hashes()
    settings = spm_settings(vocab_size, "unigram", 2_000_000, 1)
    spm = train_or_load(files, [hashes[str(f)] for f in files], data_root() / "cache", settings, log)
    return Tokenizer(spm)


def training_batches(data_dir: str, vocab_size: int, max_tokens: int, n: int, seed: int = 1, src=None, tgt=None):
    """(tokenizer, ``n`` training batches) as train.py's data pipeline gives them (epoch 0 order, cycled if short)."""
    from nmt.data.catalog import resolve_corpus
    from nmt.data.datamodule import TranslationData

    corpus = resolve_corpus(data_dir, src, tgt)
    tokenizer = load_tokenizer(corpus, vocab_size)
    data = TranslationData(corpus, tokenizer, max_tokens, 256, seed, log=lambda m: None, max_len_ratio=3.0)
    data.setup()
    batches: list[dict] = []
    while len(batches) < n:
        before = len(batches)
        for batch in data.train_dataloader():
            batches.append(batch)
            if len(batches) == n:
                break
        if len(batches) == before:
            raise ValueError(f"{data_dir}: no training batch")
    return tokenizer, batches


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    name: str
    steps: int
    tokens: int
    seconds: float
    peak_mb: float
    flops: float
    loss: float = float("nan")

    def row(self, peak: float | None) -> dict:
        d = {"name": self.name, "steps": self.steps, "tgt_tokens": self.tokens, "seconds": self.seconds,
             "tokens_per_s": self.tokens / self.seconds if self.seconds > 0 else float("nan"),
             "s_per_step": self.seconds / self.steps if self.steps else float("nan"),
             "peak_memory_mb": self.peak_mb,
             "model_tflops_per_s": self.flops / self.seconds / 1e12 if self.seconds > 0 else float("nan"),
             "last_loss": self.loss}
        d["mfu"] = d["model_tflops_per_s"] / peak if peak else None
        return d


def time_steps(step, batches: list[dict], warmup: int, device: torch.device, name: str, cfg) -> TrainResult:
    """Run ``step(batch)`` on every batch; time the ones after the first ``warmup`` (batches moved to the device
    first)."""
    batches = [_to(b, device) for b in batches]
    reset_peak_memory(device)
    loss = torch.tensor(float("nan"))
    for b in batches[:warmup]:
        loss = step(b)
    _sync(device)
    start = time.perf_counter()
    for b in batches[warmup:]:
        loss = step(b)
    _sync(device)
    seconds = time.perf_counter() - start
    timed = batches[warmup:]
    return TrainResult(name, len(timed), sum(b["ntokens"] for b in timed), seconds, peak_memory_mb(device),
                       _flops(cfg, timed), float(loss))


def _flops(cfg, batches: list[dict]) -> float:
    from nmt.data.tokenizer import PAD_ID

    return sum(model_flops(cfg, (b["src"] != PAD_ID).sum(1).cpu(), (b["tgt_out"] != PAD_ID).sum(1).cpu())
               for b in batches)


def new_module(mcfg, seed: int = 1, fused_adam: bool = True):
    """A fresh TranslationModule of ``mcfg`` with train.py's default optimiser settings."""
    from nmt.config import MonitorSettings, OptimSettings
    from nmt.lit import TranslationModule

    torch.manual_seed(seed)
    return TranslationModule(mcfg, OptimSettings(fused_adam=fused_adam), monitor=MonitorSettings(log_every=10**9))


def autocast_dtype(precision: str) -> torch.dtype | None:
    return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)


def bench_ours(mcfg, batches, warmup, device, precision, fused_adam: bool = True,
               compiled: bool = False) -> TrainResult:
    """The project's model and loss in a bare loop, with Adam as TranslationModule.configure_optimizers builds it.

    ``fused_adam`` and ``compiled`` are the levers ``--levers`` measures: Adam's fused kernel (train.py's,
    ``fused=True``) against torch's default multi-tensor one (``fused_adam=False``), and the model under
    ``torch.compile`` (``dynamic=True``: token batches change shape at every step); the warm-up steps absorb
    the compilation.
    """
    from nmt.data.tokenizer import PAD_ID
    from nmt.lit import label_smoothed_nll

    module = new_module(mcfg, fused_adam=fused_adam).to(device).train()
    configured = module.configure_optimizers()
    optimizer, schedule = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    model = torch.compile(module.model, dynamic=True) if compiled else module.model
    eps = module.optim.label_smoothing
    dtype = autocast_dtype(precision)

    def step(batch: dict) -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = model(batch["src"], batch["tgt_in"])
        loss_sum, _ = label_smoothed_nll(logits, batch["tgt_out"], eps, PAD_ID)
        loss = loss_sum / batch["ntokens"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()  # as Lightning does after every update: all the loops follow the same learning rates
        return loss.detach()

    name = "ours" + ("" if fused_adam else ", multi-tensor Adam") + (", torch.compile" if compiled else "")
    return time_steps(step, batches, warmup, device, name, mcfg)


def bench_reference(mcfg, batches, warmup, device, precision) -> TrainResult:
    from nmt.bench_reference import ReferenceTransformer, reference_step_fn
    from nmt.config import OptimSettings
    from nmt.residual import ends_with_norm

    torch.manual_seed(1)
    norm_first = ends_with_norm(mcfg.skip)  # a pre-norm variant declares that its stack ends with a LayerNorm
    model = ReferenceTransformer(mcfg.vocab_size, mcfg.d_model, mcfg.n_heads, mcfg.d_ff, mcfg.encoder_layers,
                                 mcfg.decoder_layers, mcfg.dropout, mcfg.pad_id,
                                 norm_first=norm_first).to(device).train()
    o = OptimSettings()
    step = reference_step_fn(model, o.lr, o.adam_betas, o.adam_eps, o.label_smoothing, autocast_dtype(precision),
                             warmup=o.warmup)
    return time_steps(step, batches, warmup, device, "plain nn.Transformer", mcfg)


def bench_lightning(mcfg, batches, warmup, device, precision) -> TrainResult:
    """The same module trained by a real ``lightning.Trainer.fit`` for len(batches) steps; the last ones timed."""
    import lightning as L
    from torch.utils.data import DataLoader

    class Timer(L.Callback):
        def __init__(self):
            self.start = self.end = None
            self.loss = float("nan")

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == warmup:
                _sync(device)
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == len(batches) - 1:
                _sync(device)
                self.end = time.perf_counter()
                self.loss = float(trainer.callback_metrics["loss"])  # what training_step logs: per target token

    module = new_module(mcfg)
    timer = Timer()
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*validation_step.*no `val_dataloader`.*")
    quiet_lightning()
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, precision=precision,
        max_steps=len(batches), max_epochs=-1, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
    )
    loader = DataLoader(batches, batch_size=None, shuffle=False)  # the very same batches, in the same order
    reset_peak_memory(device)
    trainer.fit(module, train_dataloaders=loader)
    timed = batches[warmup:]
    result = TrainResult("ours, Lightning Trainer", len(timed), sum(b["ntokens"] for b in timed),
                         timer.end - timer.start,
                         peak_memory_mb(device), _flops(mcfg, timed), timer.loss)
    return result


def bench_training(args, device: torch.device, precision: str, log=None) -> dict:
    from nmt.model import model_config

    log = log or _log
    n = args.warmup + args.steps
    tokenizer, batches = training_batches(args.data, args.vocab_size, args.max_tokens, n, src=args.src, tgt=args.tgt)
    mcfg = model_config(args.arch, tokenizer.vocab_size, skip=args.skip, lam=args.lam, encoder_layers=args.layers,
                        decoder_layers=args.layers)
    gpu = hardware(device, precision)["gpu"]
    peak = peak_tflops(gpu)
    results = []
    loops = [bench_reference, bench_ours] + ([] if args.no_lightning else [bench_lightning])
    if args.levers:
        loops += [partial(bench_ours, fused_adam=False), partial(bench_ours, compiled=True)]
    for fn in loops:
        r = fn(mcfg, batches, args.warmup, device, precision)
        log(f"{r.name}: {r.steps} steps, {r.tokens:,} target tokens in {r.seconds:.1f} s")
        results.append(r)
    rows = [r.row(peak[1] if peak else None) for r in results]
    ref = rows[0]["tokens_per_s"]
    for row in rows:
        row["ratio_to_plain"] = row["tokens_per_s"] / ref
    from nmt.model import Transformer

    model = Transformer(mcfg)
    n_params = model.num_parameters()
    return {
        "model": {**mcfg.to_dict(), "parameters": n_params,
                  "non_embedding_parameters": n_params - model.embed.tokens.weight.numel()},
        "data": str(args.data), "max_tokens": args.max_tokens, "warmup_steps": args.warmup, "timed_steps": args.steps,
        "tgt_tokens_per_step": sum(b["ntokens"] for b in batches[args.warmup:]) / max(args.steps, 1),
        "peak_tflops": {"gpu": peak[0], "bf16_dense": peak[1]} if peak else None,
        "rows": rows,
    }


# ---------------------------------------------------------------------------------------------- decoding
def decode_translator(decode_data: str, run: str | None, arch: str, vocab_size: int = 8000, skip: str = "post_ln",
                      lam: float = 1.0, device: str = "cpu", layers: int | None = None):
    """(translator, test source lines, description): a trained run, or an untrained model with output length =
    source length."""
    from nmt.data.catalog import resolve_corpus
    from nmt.data.corpus import read_lines
    from nmt.model import Transformer, model_config
    from nmt.translate import Translator

    corpus = resolve_corpus(decode_data, None, None)
    lines = read_lines(corpus.file("test", corpus.src))
    if run:
        return Translator.load(run, device=device), lines, f"trained model {run}"
    tokenizer = load_tokenizer(corpus, vocab_size)
    torch.manual_seed(0)
    model = Transformer(model_config(arch, tokenizer.vocab_size, dropout=0.0, skip=skip, lam=lam,
                                    encoder_layers=layers, decoder_layers=layers)).to(device)
    what = f"untrained `{arch}` model ({model.num_parameters():,} parameters), output length = source length"
    return Translator(model, tokenizer, max_len_a=1.0, max_len_b=0), lines, what


def time_decode(translator, lines: list[str], beam: int, max_tokens: int = 4096, cached: bool = True) -> dict:
    """Translate ``lines``; seconds, sentences/s and peak memory."""
    device = next(translator.model.parameters()).device
    reset_peak_memory(device)
    _sync(device)
    start = time.perf_counter()
    translator.translate(lines, beam=beam, max_tokens=max_tokens, use_cache=cached)
    _sync(device)
    elapsed = time.perf_counter() - start
    return {"search": "greedy" if beam == 1 else f"beam {beam}", "beam": beam, "cached": cached,
            "sentences": len(lines),
            "seconds": elapsed, "sentences_per_s": len(lines) / elapsed, "peak_memory_mb": peak_memory_mb(device)}


def bench_decoding(args, device: torch.device, log=None) -> dict:
    log = log or _log
    translator, lines, what = decode_translator(args.decode_data, args.run, args.arch, args.vocab_size, args.skip,
                                                args.lam, str(device), args.layers)
    lines = lines[: args.decode_lines]
    rows = []
    for beam in (1, 4):
        rows.append(time_decode(translator, lines, beam, args.decode_max_tokens))
        log(f"{rows[-1]['search']}: {len(lines)} sentences in {rows[-1]['seconds']:.1f} s")
    return {"model": what, "data": str(args.decode_data), "lines": len(lines), "rows": rows}


# ---------------------------------------------------------------------------------------------- report
def markdown(result: dict) -> str:
    h = result["hardware"]
    out = [f"Hardware: {h['cpu']}, {h['cores']} cores, {h['threads']} threads used"
           + (f"; GPU {h['gpu']}" if h["gpu"] else "; no GPU")
           + f". torch {h['torch']}, lightning {h['lightning']}, Python {h['python']}, precision {h['precision']}."]
    t = result.get("training")
    if t:
        m = t["model"]
        out.append(
            f"\n### Training: `{result['args']['arch']}` (--skip {m['skip']} --lambda {m['lam']:g}; "
            f"{m['encoder_layers']}+{m['decoder_layers']} layers, d {m['d_model']}, ff {m['d_ff']}, "
            f"{m['n_heads']} heads, vocab {m['vocab_size']:,}, {m['parameters']:,} parameters), {t['data']}, "
            f"--max-tokens {t['max_tokens']:,} "
            f"({t['tgt_tokens_per_step']:,.0f} non-padding target tokens per step), {t['warmup_steps']} warm-up + "
            f"{t['timed_steps']} timed steps, the same batches for every row\n")
        peak = t["peak_tflops"]
        mfu_head = f" | MFU (vs {peak['gpu']} {peak['bf16_dense']:g} TFLOP/s bf16)" if peak else ""
        out.append("| loop | target tokens/s per device | s/step | vs plain nn.Transformer | peak memory (MiB) | "
                   f"model TFLOP/s{mfu_head} | last loss |")
        out.append("|---|---|---|---|---|---|" + ("---|" if peak else "") + "---|")
        for r in t["rows"]:
            mfu = f" | {100 * r['mfu']:.1f}%" if peak else ""
            out.append(f"| {r['name']} | {r['tokens_per_s']:,.0f} | {r['s_per_step']:.3f} | "
                       f"{r['ratio_to_plain']:.2f}× | "
                       f"{r['peak_memory_mb']:,.0f} | {r['model_tflops_per_s']:.3f}{mfu} | {r['last_loss']:.3f} |")
    d = result.get("decoding")
    if d:
        out.append(f"\n### Decoding: {d['model']}; first {d['lines']:,} lines of the test split of {d['data']}\n")
        out.append("| search | sentences | seconds | sentences/s | vs greedy | peak memory (MiB) |")
        out.append("|---|---|---|---|---|---|")
        greedy = d["rows"][0]["sentences_per_s"]
        for r in d["rows"]:
            out.append(f"| {r['search']} | {r['sentences']:,} | {r['seconds']:.1f} | {r['sentences_per_s']:.1f} | "
                       f"{r['sentences_per_s'] / greedy:.2f}× | {r['peak_memory_mb']:,.0f} |")
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nmt.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default="../shared/data/multi30k-en-de",
                   help="training corpus folder (or a name --data accepts)")
    p.add_argument("--src"), p.add_argument("--tgt")
    p.add_argument("--arch", default="small", choices=list(ARCHS))
    p.add_argument("--layers", type=int, default=None,
                   help="encoder and decoder layers each (default: the --arch's; 3 for the fairseq comparison)")
    p.add_argument("--skip", default="post_ln", help="residual variant")
    p.add_argument("--lambda", dest="lam", type=float, default=1.0)
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--max-tokens", type=int, default=4096, help="tokens per training batch (train.py's --max-tokens)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 5 on CPU, 20 on GPU)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 on CPU, 50 on GPU)")
    p.add_argument("--precision", default=None,
                   help="32-true, bf16-mixed or 16-mixed (default: bf16-mixed on GPU, 32-true on CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is one)")
    p.add_argument("--no-lightning", action="store_true", help="skip the lightning.Trainer row")
    p.add_argument("--levers", action="store_true",
                   help="also time the bare loop with torch's default (multi-tensor, not fused) Adam, and with the "
                        "model under torch.compile")
    p.add_argument("--only", choices=["train", "decode"], help="run only one half")
    p.add_argument("--decode-data", default="../shared/data/wmt-news-en-de")
    p.add_argument("--decode-lines", type=int, default=1000)
    p.add_argument("--decode-max-tokens", type=int, default=4096, help="source tokens × beam per decoding batch")
    p.add_argument("--run", help="a trained run directory to decode with (default: an untrained --arch model)")
    p.add_argument("--json", type=Path, help="also write the results here")
    return p


def run(args, log=None) -> dict:
    log = log or _log
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = device.type == "cuda"
    precision = resolve_precision(args.precision, on_gpu=gpu)
    args.warmup = args.warmup if args.warmup is not None else (20 if gpu else 5)
    args.steps = args.steps if args.steps is not None else (50 if gpu else 20)
    result = {"hardware": hardware(device, precision),
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    if args.only != "decode":
        result["training"] = bench_training(args, device, precision, log)
    if args.only != "train":
        result["decoding"] = bench_decoding(args, device, log)
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = run(args)
    print("\n" + markdown(result))
    if args.json:
        atomic.write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Where does our baseline differ from fairseq's? Controlled comparisons that need no seed statistics (issue #14).

fairseq_parity.py compares the two systems end to end, seed against seed; this script takes the randomness out,
piece by piece, with fairseq's own code on one side and ours on the other (the 3+3 model of docs/benchmarks.md):

1. ``score``: fairseq's trained weights loaded into our ``Transformer`` (its Q/K/V side by side, its vocabulary order,
   its sinusoids, EOS as the first decoder input) and the validation perplexity computed by our code. Equal to
   ``fairseq-validate``'s: the two models compute the same function, and the perplexity is measured alike.
2. ``lockstep``: fairseq's initial weights and its first K batches, dropout 0, K updates through our
   ``TranslationModule`` and Lightning, against K updates of fairseq's own ``Trainer`` (exported beforehand): the
   loss before every update and the weights after the last. Equal up to float rounding: loss, gradient scaling, Adam
   and the learning-rate schedule agree (with fairseq's schedule, whose first update has learning rate 0).
3. ``replay``: N updates with dropout through our module on a recorded batch sequence (fairseq's, or our data
   pipeline's from ``export-ours``) from fairseq's initial weights or from our own initialisation (``--init``), then the
   validation perplexity: what the batches, the initialisation and the dropout masks each change.

fairseq's side runs in fairseq's own virtual environment (see fairseq_reference.sh), ours in the project's::

    F=/work/fairseq-venv/bin/python; W=/tmp/fairseq-parity/fairseq-seed1   # a fairseq_parity.py run (bin/, spm/)
    export TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1
    $F benchmarks/fairseq_lockstep.py export --bin $W/bin --batches 800 --updates 20 --out fs.pt
    $F benchmarks/fairseq_lockstep.py export-weights $W/checkpoints/checkpoint_last.pt fs-last.pt
    python benchmarks/fairseq_lockstep.py score fs-last.pt --pieces $W/spm --spm $W/../xavier-seed1/run/spm.model
    python benchmarks/fairseq_lockstep.py lockstep fs.pt --pieces $W/spm --spm ...
    python benchmarks/fairseq_lockstep.py export-ours --data ../shared/data/multi30k-en-de --batches 800 \\
        --init-from fs.pt --out ours.pt
    python benchmarks/fairseq_lockstep.py export-ours ... --max-tokens 4096 --fairseq-order --out ours-cut-as-fairseq.pt
    python benchmarks/fairseq_lockstep.py replay fs.pt --init export --out replay.json --pieces $W/spm --spm ...

One thread each (``OMP_NUM_THREADS=1``); a replay of 800 updates takes about 30 CPU-minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAD, UNK, BOS, EOS = 0, 1, 2, 3  # ours (nmt.data.tokenizer)
FAIRSEQ_OF = {PAD: 1, UNK: 3, BOS: 0, EOS: 2}  # fairseq's dictionary puts <s> <pad> </s> <unk> first; the pieces follow
VOCAB = 8000


# ------------------------------------------------------------------------------------------- fairseq's side
def fairseq_setup(bin_dir: str, seed: int, layers: int, dropout: float):
    """fairseq's task, model, criterion and Trainer, configured as benchmarks/fairseq_reference.sh trains them."""
    import numpy as np
    from fairseq import options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    argv = [bin_dir, "--cpu", "--seed", str(seed), "--num-workers", "0", "--arch", "transformer",
            "--share-all-embeddings", "--encoder-layers", str(layers), "--decoder-layers", str(layers),
            "--encoder-embed-dim", "256", "--decoder-embed-dim", "256", "--encoder-ffn-embed-dim", "1024",
            "--decoder-ffn-embed-dim", "1024", "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
            "--dropout", str(dropout), "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
            "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--adam-eps", "1e-9", "--lr", "2e-3",
            "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "200", "--max-tokens", "4096",
            "--disable-validation", "--no-save"]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
    np.random.seed(cfg.common.seed)
    utils.set_torch_seed(cfg.common.seed)  # as fairseq-train, before the model is built
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train", combine=False, epoch=1)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    return model, criterion, Trainer(cfg, task, model, criterion)


def export(args) -> None:
    """fairseq's initial weights, its first ``--batches`` training batches (over epochs, in the order fairseq-train
    takes them) and, with ``--updates K``, K updates of its Trainer with dropout 0 on the first K of them."""
    import torch

    torch.set_num_threads(1)
    model, criterion, trainer = fairseq_setup(args.bin, args.seed, args.layers, dropout=0.0)
    record = {"init": {k: v.float().clone() for k, v in model.state_dict().items()}, "batches": [],
              "layers": args.layers}
    epoch_itr = trainer.get_train_iterator(epoch=1, load_dataset=False)
    samples = []
    while len(record["batches"]) < args.batches:
        for sample in epoch_itr.next_epoch_itr(fix_batches_to_gpus=False, shuffle=True):
            net = sample["net_input"]
            record["batches"].append({"src_tokens": net["src_tokens"], "prev_output_tokens": net["prev_output_tokens"],
                                      "target": sample["target"]})
            if len(samples) < args.updates:
                samples.append(sample)
            if len(record["batches"]) == args.batches:
                break
        epoch_itr = trainer.get_train_iterator(epoch_itr.next_epoch_idx, load_dataset=False)
    if args.updates:
        losses = []
        for sample in samples:
            with torch.no_grad():
                loss, size, _ = criterion(model, sample)
            losses.append(float(loss) / size)
            trainer.train_step([sample])
        record["lockstep"] = {"losses": losses, "final": {k: v.float().clone() for k, v in model.state_dict().items()}}
    torch.save(record, args.out)
    print(f"{args.out}: initial weights, {len(record['batches'])} batches"
          + (f", {args.updates} lockstep updates (dropout 0)" if args.updates else ""))


def export_weights(args) -> None:
    """A fairseq checkpoint's weights as a plain state dict (readable without fairseq)."""
    import torch

    checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    torch.save({k: v.float() for k, v in checkpoint["model"].items()}, args.out)
    print(f"{args.out}: {len(checkpoint['model'])} tensors")


# ------------------------------------------------------------------------------------------- our side
def fairseq_positions(length: int, d: int, padding_idx: int = 1):
    """fairseq's sinusoids (sin and cos halves, frequencies over half − 1), rows for positions from padding_idx + 1."""
    import torch

    half = d // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000) / (half - 1)))
    angles = torch.arange(length + padding_idx + 1, dtype=torch.float)[:, None] * freq[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], 1)[padding_idx + 1:].contiguous()


def our_model(state: dict, layers: int, dropout: float = 0.0, init: str = "xavier"):
    """Our Transformer with fairseq's weights ``state`` (None: our own ``init``), fairseq's sinusoids."""
    import torch

    from nmt.model import ModelConfig, Transformer

    cfg = ModelConfig(vocab_size=VOCAB, d_model=256, d_ff=1024, n_heads=4, encoder_layers=layers,
                      decoder_layers=layers, dropout=dropout, init=init)
    model = Transformer(cfg)
    if state is not None:
        order = torch.arange(VOCAB)  # our id → fairseq's
        for ours, theirs in FAIRSEQ_OF.items():
            order[ours] = theirs
        weights = {"embed.tokens.weight": state["encoder.embed_tokens.weight"][order]}
        for side in ("encoder", "decoder"):
            for i in range(layers):
                p = f"{side}.layers.{i}."
                attention = [("self_attn", "self_attn")]
                if side == "decoder":
                    attention.append(("encoder_attn", "cross_attn"))
                for t in ("weight", "bias"):
                    for theirs, ours in attention:
                        qkv = [state[p + f"{theirs}.{x}_proj.{t}"] for x in "qkv"]
                        weights[p + f"{ours}.in_proj.{t}"] = torch.cat(qkv)
                        weights[p + f"{ours}.out_proj.{t}"] = state[p + f"{theirs}.out_proj.{t}"]
                        weights[p + f"{ours}_residual.norm.{t}"] = state[p + f"{theirs}_layer_norm.{t}"]
                    weights[p + f"ff.w1.{t}"] = state[p + f"fc1.{t}"]
                    weights[p + f"ff.w2.{t}"] = state[p + f"fc2.{t}"]
                    weights[p + f"ff_residual.norm.{t}"] = state[p + f"final_layer_norm.{t}"]
        model.load_state_dict(weights)
    model.embed.positions = fairseq_positions(1024, 256)
    return model


def valid_nll(model, pieces: Path, spm: str, start: int = EOS) -> tuple[float, int]:
    """NLL per target token (EOS included) of the valid split, from fairseq's piece files, ``start`` as the first
    decoder input; eval mode."""
    import sentencepiece
    import torch

    sp = sentencepiece.SentencePieceProcessor(model_file=spm)

    def ids(path):
        return [[sp.piece_to_id(p) for p in line.split()] for line in path.read_text(encoding="utf-8").splitlines()]

    src, tgt = ids(pieces / "valid.en"), ids(pieces / "valid.de")
    model.eval()
    total, count = 0.0, 0
    order = sorted(range(len(src)), key=lambda i: len(tgt[i]))
    with torch.no_grad():
        for b in range(0, len(order), 64):
            rows = order[b:b + 64]
            s = torch.full((len(rows), max(len(src[i]) for i in rows) + 1), PAD)
            t_in = torch.full((len(rows), max(len(tgt[i]) for i in rows) + 1), PAD)
            t_out = t_in.clone()
            for r, i in enumerate(rows):
                s[r, :len(src[i])], s[r, len(src[i])] = torch.tensor(src[i]), EOS
                t_in[r, 0], t_in[r, 1:len(tgt[i]) + 1] = start, torch.tensor(tgt[i])
                t_out[r, :len(tgt[i])], t_out[r, len(tgt[i])] = torch.tensor(tgt[i]), EOS
            lprobs = torch.log_softmax(model(s, t_in).float(), -1)
            keep = t_out != PAD
            total -= lprobs.gather(-1, t_out.unsqueeze(-1)).squeeze(-1)[keep].double().sum().item()
            count += int(keep.sum())
    return total / count, count


def our_batches(record: dict, steps: int) -> list[dict]:
    """The recorded batches as our collate makes them: fairseq's (ids mapped, source padding moved to the right, EOS
    first decoder input) or our pipeline's (``export-ours``: BOS replaced by EOS, as fairseq feeds)."""
    import torch

    if "ours" in record:
        out = []
        for b in record["ours"][:steps]:
            tgt_in = b["tgt_in"].clone()
            tgt_in[:, 0] = EOS
            out.append({"id": torch.arange(len(b["src"])), "src": b["src"], "tgt_in": tgt_in, "tgt_out": b["tgt_out"],
                        "ntokens": int(b["ntokens"])})
        return out
    ours_of = torch.arange(VOCAB)
    for ours, theirs in FAIRSEQ_OF.items():
        ours_of[theirs] = ours
    out = []
    for b in record["batches"][:steps]:
        src, tgt_in, tgt_out = (ours_of[b[k]] for k in ("src_tokens", "prev_output_tokens", "target"))
        src = torch.stack([torch.cat([row[row != PAD], row[row == PAD]]) for row in src])  # fairseq pads on the left
        out.append({"id": torch.arange(len(src)), "src": src, "tgt_in": tgt_in, "tgt_out": tgt_out,
                    "ntokens": int((tgt_out != PAD).sum())})
    return out


def train_ours(model, batches: list[dict], fairseq_schedule: bool, seed: int = 1, losses: bool = False) -> list[float]:
    """Our TranslationModule (Lightning, as train.py) trains ``model`` on ``batches``, one update each; with ``losses``
    returns the loss per target token before each update (an extra forward pass: only without dropout, whose masks
    it would shift). ``fairseq_schedule``: update k uses the schedule's value at k − 1 (0 first). The dropout masks
    are drawn from ``seed``, set just before training."""
    import lightning as L
    import torch

    import nmt.lit as lit
    from nmt.config import MonitorSettings, OptimSettings

    if fairseq_schedule:
        lit.inverse_sqrt_schedule = lambda w: (lambda s: min(s / w, math.sqrt(w / s)) if s else 0.0)
    module = lit.TranslationModule(model.cfg, OptimSettings(lr=2e-3, warmup=200),
                                   monitor=MonitorSettings(log_every=10**9))
    module.model = model
    recorded = []

    class LossBefore(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            with torch.no_grad():
                logits = pl_module.model(batch["src"], batch["tgt_in"])
                loss, _ = lit.label_smoothed_nll(logits, batch["tgt_out"], 0.1, PAD)
            recorded.append(float(loss) / batch["ntokens"])

    torch.manual_seed(seed)
    trainer = L.Trainer(max_steps=len(batches), accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[LossBefore()] if losses else [])
    trainer.fit(module, torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False))
    return recorded


def score(args) -> None:
    import torch

    torch.set_num_threads(1)
    nll, tokens = valid_nll(our_model(torch.load(args.weights), args.layers), Path(args.pieces), args.spm)
    print(f"{args.weights} in our Transformer: valid NLL {nll:.4f}, perplexity {math.exp(nll):.3f} ({tokens} tokens)")


def lockstep(args) -> None:
    import torch

    torch.set_num_threads(1)
    record = torch.load(args.export)
    steps = len(record["lockstep"]["losses"])
    model = our_model(record["init"], record.get("layers", 3))
    ours = train_ours(model, our_batches(record, steps), fairseq_schedule=not args.our_schedule, losses=True)
    final = our_model(record["lockstep"]["final"], record.get("layers", 3)).state_dict()
    theirs = record["lockstep"]["losses"]
    worst = max((float((model.state_dict()[k] - v).abs().max() / v.abs().max().clamp_min(1e-12)), k)
                for k, v in final.items() if k != "embed.positions")
    print("update  fairseq loss  our loss")
    for i, (a, b) in enumerate(zip(theirs, ours), 1):
        print(f"{i:6d}  {a:12.5f}  {b:8.5f}")
    print(f"largest |loss difference| {max(abs(a - b) for a, b in zip(theirs, ours)):.2e}; largest relative weight "
          f"difference after {steps} updates {worst[0]:.2e} ({worst[1]})")


def cut_as_fairseq(sampler, src_lens, tgt_lens, max_tokens: int, seed: int, multiple: int = 8) -> None:
    """Re-sort and re-cut a TokenBatchSampler's batches as fairseq's ``LanguagePairDataset`` and ``batch_by_size``
    form them: ordered by source length, then target length, ties in a seeded random order; cut greedily at
    ``max_tokens`` padded tokens (max(source, target) × sentences), an overfull batch cut back to a multiple of
    ``multiple`` sentences (fairseq's ``--required-batch-size-multiple``, 8) with the rest carried to the next."""
    import numpy as np

    src, tgt = np.asarray(src_lens, dtype=np.int64), np.asarray(tgt_lens, dtype=np.int64)
    order = np.lexsort((np.random.default_rng(seed).permutation(len(src)), tgt, src))
    sizes = np.maximum(src, tgt)[order]
    bounds, start, longest = [0], 0, 0
    for pos, n in enumerate(sizes.tolist()):
        count = pos - start
        if count and max(longest, n) * (count + 1) > max_tokens:
            start += max(multiple * (count // multiple), count % multiple)
            bounds.append(start)
            longest = int(sizes[start:pos].max(initial=0))
        longest = max(longest, n)
    bounds.append(len(sizes))
    sampler.order, sampler.bounds = order, np.asarray(bounds, dtype=np.int64)
    sampler.batch_ids = np.arange(len(bounds) - 1)


def export_ours(args) -> None:
    """Our data pipeline's first ``--batches`` training batches (as train.py makes them, epochs in order; with
    ``--fairseq-order`` cut as fairseq cuts them, ``cut_as_fairseq``)."""
    import torch

    from nmt.bench import load_tokenizer
    from nmt.data.catalog import resolve_corpus
    from nmt.data.datamodule import TranslationData

    corpus = resolve_corpus(args.data, None, None)
    data = TranslationData(corpus, load_tokenizer(corpus, VOCAB), args.max_tokens, 256, args.seed, log=lambda m: None,
                           max_len_ratio=3.0)  # train.py's defaults
    data.setup()
    if args.fairseq_order:
        data._make_sampler("train", True, 1, 0)  # the split's batches, made once and cached; each loader shards a copy
        cut_as_fairseq(data._batch_layouts[("train", True)], *data.datasets["train"].lengths(), args.max_tokens,
                       args.seed)
    batches, epoch = [], 0
    while len(batches) < args.batches:
        loader = data.train_dataloader()
        data.train_sampler.set_epoch(epoch)  # as TranslationModule.on_train_epoch_start
        for batch in loader:
            batches.append(batch)
            if len(batches) == args.batches:
                break
        epoch += 1
    record = torch.load(args.init_from)
    torch.save({"init": record["init"], "layers": record.get("layers", 3),
                "ours": [{k: b[k] for k in ("src", "tgt_in", "tgt_out", "ntokens")} for b in batches]}, args.out)
    print(f"{args.out}: {len(batches)} batches of our pipeline, the initial weights of {args.init_from}")


def replay(args) -> None:
    import torch

    torch.set_num_threads(1)
    record = torch.load(args.export)
    torch.manual_seed(args.seed)
    model = our_model(record["init"] if args.init == "export" else None, record.get("layers", 3), dropout=args.dropout,
                      init="xavier" if args.init == "export" else args.init)
    started = time.time()
    train_ours(model, our_batches(record, args.updates), fairseq_schedule=not args.our_schedule, seed=args.seed)
    nll, tokens = valid_nll(model, Path(args.pieces), args.spm)
    result = {"export": args.export, "init": args.init, "dropout": args.dropout, "updates": args.updates,
              "seed": args.seed, "schedule": "ours" if args.our_schedule else "fairseq", "valid_nll": nll,
              "valid_ppl": math.exp(nll), "tokens": tokens, "minutes": (time.time() - started) / 60}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="(fairseq's venv) initial weights, batches, lockstep updates")
    e.add_argument("--bin", required=True, help="fairseq-preprocess output of a fairseq_parity.py run")
    e.add_argument("--out", required=True)
    e.add_argument("--batches", type=int, default=800)
    e.add_argument("--updates", type=int, default=0, help="lockstep updates with dropout 0 (default: none)")
    e.add_argument("--seed", type=int, default=1)
    e.add_argument("--layers", type=int, default=3)
    w = sub.add_parser("export-weights", help="(fairseq's venv) a checkpoint's weights as a plain state dict")
    w.add_argument("checkpoint")
    w.add_argument("out")
    for name, text in (("score", "fairseq's weights in our Transformer: validation perplexity"),
                       ("lockstep", "our module on fairseq's batches from its initial weights, dropout 0"),
                       ("replay", "N updates with dropout on recorded batches, then validation perplexity")):
        q = sub.add_parser(name, help=text)
        q.add_argument("weights" if name == "score" else "export")
        q.add_argument("--pieces", required=True, help="fairseq_parity.py's spm/ folder (valid.en, valid.de pieces)")
        q.add_argument("--spm", required=True, help="the SentencePiece model of those pieces")
        if name == "score":
            q.add_argument("--layers", type=int, default=3)
        else:
            q.add_argument("--our-schedule", action="store_true",
                           help="our schedule (update 1 at 1/warmup of the peak)")
        if name == "replay":
            q.add_argument("--out", required=True)
            q.add_argument("--init", choices=("export", "xavier", "fairseq"), default="export",
                           help="the exported initial weights, or our own initialisation drawn with --seed")
            q.add_argument("--dropout", type=float, default=0.1)
            q.add_argument("--updates", type=int, default=800)
            q.add_argument("--seed", type=int, default=1)
    o = sub.add_parser("export-ours", help="our data pipeline's batches, with an export's initial weights")
    o.add_argument("--data", required=True)
    o.add_argument("--init-from", required=True)
    o.add_argument("--out", required=True)
    o.add_argument("--batches", type=int, default=800)
    o.add_argument("--max-tokens", type=int, default=3600)
    o.add_argument("--seed", type=int, default=1)
    o.add_argument("--fairseq-order", action="store_true",
                   help="re-sort and cut the batches as fairseq does (source, then target length; sizes a "
                   "multiple of 8)")
    args = p.parse_args(argv)
    {"export": export, "export-weights": export_weights, "score": score, "lockstep": lockstep,
     "export-ours": export_ours, "replay": replay}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The five measurements of ``python -m nmt.diagnose`` (defined in ``nmt.diagnose``'s docstring), as functions of a
model and a few batches. Each returns plain numbers (lists and dicts), ready for JSON.

The model is put in evaluation mode (no dropout) for all of them, so that every number is a deterministic function
of the weights and the data; the batches are those of ``nmt.data.datamodule.collate`` (``src``, ``tgt_in``,
``tgt_out``, ``ntokens``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import torch
from torch import Tensor, nn

from nmt.data.tokenizer import PAD_ID
from nmt.diagnose.probes import lesioned, place_label, recording, stream_names, streams
from nmt.lit import label_smoothed_nll

SIDES = ("encoder", "decoder")


def batch_loss(model: nn.Module, batch: dict, epsilon: float, embedded: Tensor | None = None) -> Tensor:
    """The training loss of ``batch``: label-smoothed cross-entropy per target token (teacher forcing). With
    ``embedded``, that tensor stands for the source embedding output (the encoder's input)."""
    src = batch["src"]
    src_mask = (src != PAD_ID)[:, None, None, :]
    x = model.embed(src) if embedded is None else embedded
    memory = model.encoder(x, src_mask)
    logits = model.decode(batch["tgt_in"], memory, src_mask)
    return label_smoothed_nll(logits, batch["tgt_out"], epsilon, PAD_ID)[0] / batch["ntokens"]


# ------------------------------------------------------------------------------------------- 1. gradient flow
def gradient_flow(model: nn.Module, batches: list[dict], epsilon: float) -> dict:
    """The gradient 2-norm of every encoder and decoder layer's parameters (its residual blocks' own included) and
    of the shared embedding, for the loss of each batch; their mean over the batches, and the mean loss."""
    model.eval()
    norms: dict[str, list[list[float]]] = {"encoder": [], "decoder": [], "embedding": []}
    losses = []
    for batch in batches:
        model.zero_grad(set_to_none=True)
        loss = batch_loss(model, batch, epsilon)
        loss.backward()
        losses.append(loss.item())
        for side in SIDES:
            norms[side].append([_grad_norm(layer) for layer in getattr(model, side).layers])
        norms["embedding"].append([_grad_norm(model.embed)])
    model.zero_grad(set_to_none=True)
    mean = {key: [sum(col) / len(col) for col in zip(*rows)] for key, rows in norms.items()}
    return {"encoder": mean["encoder"], "decoder": mean["decoder"], "embedding": mean["embedding"][0],
            "loss": sum(losses) / len(losses), "per_batch": norms}


def _grad_norm(module: nn.Module) -> float:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads).item() if grads else 0.0


# ------------------------------------------------------------------------- 2. hidden states and 5. similarity
@torch.no_grad()
def hidden_states_and_similarity(model: nn.Module, batches: list[dict]) -> tuple[dict, dict]:
    """(hidden-state RMS, linear CKA) from one teacher-forced pass over the batches.

    RMS, per side: the stack's input (the embedding output), every block's output state, stream by stream, and the
    stack's output; each over the non-padding positions and the channels of every batch. CKA, per side: between the
    representations "embedding", "layer 1" … "layer N" (a layer's output state as the stack would end there).
    """
    model.eval()
    d = model.cfg.d_model
    rms: dict[str, list[dict]] = {}
    sums: dict[str, list[list[float]]] = {}
    features: dict[str, list[list[Tensor]]] = {}
    counts = dict.fromkeys(SIDES, 0)
    with recording(model) as seen:
        for batch in batches:
            model(batch["src"], batch["tgt_in"])
            masks = {"encoder": batch["src"] != PAD_ID, "decoder": batch["tgt_in"] != PAD_ID}
            for side in SIDES:
                mask = masks[side]
                points = [("embedding", None, [seen.inputs[side]])]
                points += [(place_label(block), block, streams(state, d)) for block, state in seen.blocks[side]]
                points += [("output", None, [seen.outputs[side]])]
                if side not in rms:
                    rms[side] = [{"label": label, "streams": stream_names(block, len(ts)) if block is not None
                                  else [label]} for label, block, ts in points]
                    sums[side] = [[0.0] * len(ts) for _, _, ts in points]
                    features[side] = [[] for _ in range(len(seen.layers[side]) + 1)]
                for i, (_, _, ts) in enumerate(points):
                    for j, t in enumerate(ts):
                        sums[side][i][j] += t[mask].double().pow(2).sum().item()
                counts[side] += int(mask.sum())
                for i, h in enumerate([seen.inputs[side], *seen.layers[side]]):
                    features[side][i].append(h[mask].double())
    for side in SIDES:
        for point, total in zip(rms[side], sums[side]):
            point["rms"] = [math.sqrt(s / (counts[side] * d)) for s in total]
    similarity = {}
    for side in SIDES:
        reps = [torch.cat(chunks) for chunks in features[side]]
        labels = ["embedding"] + [f"layer {i}" for i in range(1, len(reps))]
        similarity[side] = {"labels": labels, "cka": [[linear_cka(a, b) for b in reps] for a in reps],
                            "tokens": counts[side]}
    return rms, similarity


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019) between representations x (n × d₁) and y (n × d₂) of the same n examples:
    ‖Yᵀ X‖²_F / (‖Xᵀ X‖_F · ‖Yᵀ Y‖_F) after centring every column. 1 for representations equal up to an orthogonal
    transform and an isotropic scale; 0 for uncorrelated ones."""
    x = x.double() - x.double().mean(0, keepdim=True)
    y = y.double() - y.double().mean(0, keepdim=True)
    cross = torch.linalg.matrix_norm(y.T @ x) ** 2
    norms = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return (cross / norms).item() if norms > 0 else 0.0


# ------------------------------------------------------------------------------------- 3. shattered gradients
def gradient_correlations(loss_of: Callable[[Tensor], Tensor], x: Tensor, mask: Tensor, scales: list[float],
                          lags: int, generator: torch.Generator) -> dict:
    """Balduzzi et al.'s shattered-gradients measurements for a scalar ``loss_of(x)`` of an input x (B, T, d) whose
    positions ``mask`` (B, T) are real (the others are padding, never perturbed nor counted).

    - ``perturbation``: for each ε in ``scales``, the Pearson correlation, per example, between the entries of
      g(x) = ∂loss/∂x and of g(x + ε·r·ξ) over its real positions (ξ ~ N(0, I) on the real positions, r the RMS of
      x's real entries), then the mean over the examples;
    - ``along_sentence``: for each lag k = 1…``lags``, the Pearson correlation, per example, between the entries of
      g(x) at positions t and t + k (all real t with t + k real, every channel), mean over the examples that are
      longer than k.
    """
    mask = mask.bool()
    base = _input_gradient(loss_of, x)
    real = x.detach()[mask]
    r = real.pow(2).mean().sqrt()
    perturbation = []
    for eps in scales:
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype) * mask.unsqueeze(-1)
        moved = _input_gradient(loss_of, x.detach() + eps * r * noise)
        perturbation.append(_mean([_pearson(base[i][mask[i]], moved[i][mask[i]]) for i in range(x.size(0))]))
    along = []
    lengths = mask.sum(1).tolist()
    for k in range(1, lags + 1):
        values = []
        for i, n in enumerate(lengths):
            g = base[i][mask[i]]  # (n, d): real positions in order (padding is at the end)
            if n > k:
                values.append(_pearson(g[:-k], g[k:]))
        along.append(_mean(values))
    return {"scales": list(scales), "perturbation": perturbation, "lags": list(range(1, lags + 1)),
            "along_sentence": along, "examples": x.size(0)}


def _input_gradient(loss_of: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_of(x), x)
    return grad.detach()


def _pearson(a: Tensor, b: Tensor) -> float | None:
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    denominator = a.norm() * b.norm()
    return (a @ b / denominator).item() if denominator > 0 else None


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def shattered_gradients(model: nn.Module, batches: list[dict], epsilon: float, scales: list[float], lags: int,
                        seed: int) -> dict:
    """``gradient_correlations`` of the training loss with respect to the source embedding output (the encoder's
    input: token embedding × √d + positions), the decoder's input held fixed; every batch, weighted by its
    sentences."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    parts = []
    for batch in batches:
        with torch.no_grad():
            x = model.embed(batch["src"])
        parts.append(gradient_correlations(lambda e, b=batch: batch_loss(model, b, epsilon, embedded=e), x,
                                           batch["src"] != PAD_ID, scales, lags, generator))
    model.zero_grad(set_to_none=True)
    total = sum(p["examples"] for p in parts)

    def weighted(key: str) -> list[float | None]:
        out = []
        for values in zip(*(p[key] for p in parts)):
            kept = [(v, p["examples"]) for v, p in zip(values, parts) if v is not None]
            out.append(sum(v * n for v, n in kept) / sum(n for _, n in kept) if kept else None)
        return out

    return {"scales": list(scales), "perturbation": weighted("perturbation"), "lags": list(range(1, lags + 1)),
            "along_sentence": weighted("along_sentence"), "sentences": total}


# ------------------------------------------------------------------------------------------------- 4. lesions
def lesion_study(model: nn.Module, translate: Callable[[list[str]], list[str]], score: Callable[[list[str]], float],
                 sources: list[str], max_k: int, draws: int, seed: int, progress=None) -> dict:
    """Greedy BLEU of ``sources`` with sublayers deleted (their residual branch F(x) = 0, ``probes.lesioned``).

    ``intact``: nothing deleted. ``single``: each sublayer alone, in the order they compute (encoder first).
    ``random``: for k = 2…``max_k``, ``draws`` sets of k distinct sublayers, each drawn uniformly from all of
    them (``random.Random(seed)``). ``by_k``: BLEU mean and standard deviation against k, k = 0 the intact
    model, k = 1 over every single lesion, k ≥ 2 over the draws.
    """
    blocks = [block for block, _ in model.residual_pairs()]
    names = [f"{block.place.side} {place_label(block)}" if getattr(block, "place", None) else place_label(block)
             for block in blocks]
    intact = score(translate(sources))
    single = []
    for i, block in enumerate(blocks):
        with lesioned([block]):
            single.append({"sublayer": names[i], "side": _side(block), "bleu": score(translate(sources))})
        if progress:
            progress(f"lesion {i + 1}/{len(blocks)}: {names[i]}: BLEU {single[-1]['bleu']:.2f}")
    rng = random.Random(seed)
    drawn = []
    for k in range(2, min(max_k, len(blocks)) + 1):
        for _ in range(draws):
            chosen = sorted(rng.sample(range(len(blocks)), k))
            with lesioned([blocks[i] for i in chosen]):
                drawn.append({"k": k, "sublayers": [names[i] for i in chosen], "bleu": score(translate(sources))})
        if progress:
            progress(f"lesions of {k} sublayers: BLEU " + ", ".join(f"{d['bleu']:.2f}" for d in drawn if d["k"] == k))
    by_k = [{"k": 0, "mean": intact, "std": 0.0, "n": 1}, _summary(1, [s["bleu"] for s in single])]
    by_k += [_summary(k, [d["bleu"] for d in drawn if d["k"] == k]) for k in sorted({d["k"] for d in drawn})]
    return {"intact": intact, "single": single, "random": drawn, "by_k": by_k, "sentences": len(sources),
            "draws": draws, "seed": seed}


def _side(block: nn.Module) -> str:
    place = getattr(block, "place", None)
    return place.side if place is not None else ""


def _summary(k: int, values: list[float]) -> dict:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"k": k, "mean": mean, "std": std, "n": len(values)}

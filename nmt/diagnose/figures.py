"""The figures of a diagnosis (``single``: one model, into its folder) or of several side by side (``compare``: the
study report's "Why" section, one colour per variant). matplotlib is optional: without it both return [].

- ``gradient_flow.png``: gradient norm per layer (encoder solid, decoder dashed), log scale; an exploded model's
  norm (more than 10⁶ × the median) is marked ▲ on the top edge with its value, one that is not finite ✕ on the
  bottom edge; for one run that logged ``--log-layer-grads``, a heat map of the logged norms, layers × updates;
- ``hidden_states.png``: RMS of the residual stream after every sublayer, encoder and decoder, every stream;
- ``shattered_gradients.png``: gradient correlation against the perturbation ε, and along the sentence against
  the lag;
- ``lesion.png``: BLEU with each sublayer deleted, and against the number k of sublayers deleted at once;
- ``similarity.png``: linear CKA between every pair of layers, one heat map per side (and per variant).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

from nmt.plotting import legend_below, pyplot, save_figure

STREAM_STYLES = ("-", "--", ":", "-.")


def single(result: dict, out: Path) -> list[str]:
    """The five figures of one diagnosis, in ``out``; their file names."""
    plt = pyplot()
    if plt is None:
        return []
    colors = {result["subject"]["label"]: "tab:blue"}
    return [
        gradient_flow(plt, [result], colors, out / "gradient_flow.png", heat=result.get("training_gradients")),
        hidden_states(plt, [result], colors, out / "hidden_states.png"),
        shattered_gradients(plt, [result], colors, out / "shattered_gradients.png"),
        lesion(plt, [result], colors, out / "lesion.png"),
        similarity(plt, [result], out / "similarity.png"),
    ]


def compare(results: list[dict], out: Path, colors: dict | None = None, prefix: str = "why_",
            what: str = "one model per variant") -> list[str]:
    """The figures of several diagnoses, one colour per variant (``colors``: label → colour), as ``prefix`` + the
    single figure's name; their file names. ``what`` the models are, for the figures' titles."""
    plt = pyplot()
    if plt is None or not results:
        return []
    labels = [r["subject"]["label"] for r in results]
    colors = {**{label: plt.get_cmap("tab10")(i % 10) for i, label in enumerate(labels)}, **(colors or {})}
    return [
        gradient_flow(plt, results, colors, out / f"{prefix}gradient_flow.png", what=what),
        hidden_states(plt, results, colors, out / f"{prefix}hidden_states.png", what=what),
        shattered_gradients(plt, results, colors, out / f"{prefix}shattered_gradients.png", what=what),
        lesion(plt, results, colors, out / f"{prefix}lesion.png", what=what),
        similarity(plt, results, out / f"{prefix}similarity.png", what=what),
    ]


def _save(plt, fig, path: Path) -> str:
    return save_figure(plt, fig, path, dpi=110)


def _legend_finish_save(plt, fig, entries: list[tuple], legend: bool, path: Path) -> str:
    """The common end of a multi-panel figure: one legend below the panels when ``legend``, layout, save."""
    legend_below(fig, entries if legend else [])
    return _save(plt, fig, path)


def _title(results: list[dict], what: str) -> str:
    """What the figure shows: the model (one diagnosis), or ``what`` the models are."""
    if len(results) > 1:
        return what
    step = results[0]["subject"]["step"]
    when = " at initialisation" if step == 0 else (f", update {step:,}" if step else "")
    return results[0]["subject"]["label"] + when


# ------------------------------------------------------------------------------------------- gradient flow
def gradient_flow(plt, results: list[dict], colors: dict, path: Path, heat: dict | None = None, what: str = "") -> str:
    fig, axes = plt.subplots(1, 2 if heat else 1, figsize=(12 if heat else 7, 4.6), squeeze=False)
    ax = axes[0][0]
    entries, curves = [], []
    for r in results:
        label, flow = r["subject"]["label"], r["gradient_flow"]
        curves += [(label, side, style, marker, _nan(flow[side]))
                   for side, style, marker in (("encoder", "-", "o"), ("decoder", "--", "s"))]
    ceiling = _off_scale_above([v for *_, norms in curves for v in norms])
    off, broken = [], []  # (layer, value, colour) above the ceiling; (layer, colour) not finite
    for label, side, style, marker, norms in curves:
        shown = [math.nan if v > ceiling else v for v in norms]
        off += [(layer, v, colors[label]) for layer, v in enumerate(norms, 1) if v > ceiling]
        broken += [(layer, colors[label]) for layer, v in enumerate(norms, 1) if not math.isfinite(v)]
        (line,) = ax.plot(range(1, len(shown) + 1), shown, style, marker=marker, ms=4, color=colors[label])
        if side == "encoder":
            entries.append((line, label))
    _scale_y(ax, [v for *_, norms in curves for v in norms if v <= ceiling])
    ax.set_xlim(0.7, max(len(norms) for *_, norms in curves) + 0.3)
    ax.set_ylim(*ax.get_ylim())  # fixed: the marks below sit on the edges and must not move them
    if off:
        _mark_off_scale(ax, off)
    for layer, color in broken:  # inf or NaN (None in diagnosis.json): a ✕ on the bottom edge
        ax.plot([layer], [ax.get_ylim()[0]], "x", ms=8, mew=2, color=color, clip_on=False)
    ax.set_xlabel("layer (1 = bottom)")
    ax.set_ylabel("gradient 2-norm of the layer's parameters")
    ax.set_title(f"gradient per layer ({results[0]['subject']['batches']} batches)\nencoder solid, decoder dashed"
                 + (", ✕ not finite" if broken else ""), fontsize=10)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if heat:
        _heat_map(plt, fig, axes[0][1], heat)
    fig.suptitle(f"gradient flow: {_title(results, what)}", fontsize=11)
    return _legend_finish_save(plt, fig, entries, len(results) > 1, path)


def _heat_map(plt, fig, ax, heat: dict) -> None:
    """The logged per-layer gradient norms, layers (rows, encoder below decoder) × updates, log₁₀ colour."""
    import numpy as np

    rows, names = [], []
    for side, short in (("encoder", "enc"), ("decoder", "dec")):
        for i, values in enumerate(heat[side]):
            rows.append([math.log10(v) if v and v > 0 else math.nan for v in values])
            names.append(f"{short} {i + 1}")
    steps = heat["steps"]
    edges = [steps[0] - 0.5] + [(a + b) / 2 for a, b in itertools.pairwise(steps)] + [steps[-1] + 0.5]
    mesh = ax.pcolormesh(edges, np.arange(len(rows) + 1), np.array(rows, dtype=float), cmap="viridis", shading="flat")
    ax.set_yticks(np.arange(len(rows)) + 0.5)
    ax.set_yticklabels(names, fontsize=7)
    ax.set_xlabel("update")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title("logged during training (--log-layer-grads)", fontsize=10)
    fig.colorbar(mesh, ax=ax, label="log₁₀ gradient norm")


# ------------------------------------------------------------------------------------------- hidden states
def hidden_states(plt, results: list[dict], colors: dict, path: Path, what: str = "") -> str:
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), squeeze=False)
    entries = []
    spans = []
    for ax, side in zip(axes[0], ("encoder", "decoder")):
        ticks = {}
        for r in results:
            label, points = r["subject"]["label"], r["hidden_states"][side]
            blocks = points[1:-1]
            n_streams = max(len(p["rms"]) for p in blocks)
            for j in range(n_streams):
                xs = [i + 1 for i, p in enumerate(blocks) if j < len(p["rms"])]
                ys = _nan([p["rms"][j] for p in blocks if j < len(p["rms"])])
                name = label if n_streams == 1 else f"{label}: {blocks[0]['streams'][j]}"
                (line,) = ax.plot(xs, ys, STREAM_STYLES[j % len(STREAM_STYLES)], marker=".", color=colors[label])
                entries.append((line, name))
                spans += ys
            gap = max(1, round(len(blocks) / 15))  # the ends stand apart from the sublayers: labels never collide
            ax.plot([1 - gap], _nan(points[0]["rms"]), "o", color=colors[label], ms=5)
            ax.plot([len(blocks) + gap], _nan(points[-1]["rms"]), "D", color=colors[label], ms=5)
            spans += _nan(points[0]["rms"] + points[-1]["rms"])
            ticks = {1 - gap: "emb"} | {i + 1: p["label"].split()[0] for i, p in enumerate(blocks)
                                        if i == 0 or p["label"].split()[0] != blocks[i - 1]["label"].split()[0]}
            ticks[len(blocks) + gap] = "out"
        ax.set_xticks(list(ticks))
        ax.set_xticklabels(list(ticks.values()), fontsize=8)
        ax.set_xlabel("after sublayer (layer starts marked; ○ embedding, ◇ the stack's output)")
        ax.set_ylabel("RMS of the residual stream")
        ax.set_title(side, fontsize=10)
    for ax in axes[0]:
        _scale_y(ax, spans)
    fig.suptitle(f"hidden-state growth: {_title(results, what)}", fontsize=11)
    return _legend_finish_save(plt, fig, entries, len({name for _, name in entries}) > 1, path)


# -------------------------------------------------------------------------------------- shattered gradients
def shattered_gradients(plt, results: list[dict], colors: dict, path: Path, what: str = "") -> str:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), squeeze=False)
    left, right = axes[0]
    entries, values = [], []
    for r in results:
        label, s = r["subject"]["label"], r["shattered_gradients"]
        xs, ys = _defined(s["scales"], s["perturbation"])
        (line,) = left.plot(xs, ys, "-o", ms=4, color=colors[label])
        entries.append((line, label))
        lags, auto = _defined(s["lags"], s["along_sentence"])
        right.plot(lags, auto, "-o", ms=4, color=colors[label])
        values += ys + auto
    left.set_xscale("log")
    left.set_xlabel("perturbation ε (relative to the embeddings' RMS)")
    left.set_ylabel("correlation of g(x) and g(x + ε·noise)")
    left.set_title("gradient w.r.t. the source embeddings, input perturbed", fontsize=10)
    right.set_xlabel("positions apart (lag)")
    right.set_ylabel("correlation of g at t and t + lag")
    right.set_title("the same gradient along the sentence", fontsize=10)
    low = min([0.0, *values]) - 0.05
    for ax in (left, right):
        ax.set_ylim(low, 1.05)
        ax.axhline(0, color="grey", lw=0.5)
    fig.suptitle(f"shattered gradients (1 smooth, 0 white noise): {_title(results, what)}", fontsize=11)
    return _legend_finish_save(plt, fig, entries, len(results) > 1, path)


def _scale_y(ax, values: list[float], factor: float = 20.0) -> None:
    """A log scale when the positive ``values`` span more than ``factor``; otherwise a linear one from 0."""
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    if positive and max(positive) / min(positive) > factor:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)


def _off_scale_above(values: list[float], times: float = 1e6) -> float:
    """The ceiling above which a value is drawn off scale: ``times`` × the median of the positive finite ``values``.

    One exploded model (a gradient of 10¹⁸ beside the others' 0.01–1) would otherwise squeeze every other curve
    into a flat band at the bottom of the axis."""
    positive = sorted(v for v in values if v > 0 and math.isfinite(v))
    return positive[len(positive) // 2] * times if positive else math.inf


def _mark_off_scale(ax, points: list[tuple]) -> None:
    """Each (x, value, colour) above the axis as ▲ at its top edge, labelled with the value."""
    top = ax.get_ylim()[1]
    for x, value, color in points:
        ax.plot([x], [top], "^", ms=7, color=color, clip_on=False)
        ax.annotate(f"{value:.1e} (off scale)", (x, top), xytext=(-8, -4), textcoords="offset points",
                    ha="right", va="top", fontsize=7, color=color,
                    bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": color, "alpha": 0.9})


def _nan(values: list) -> list[float]:
    """None (a number that was not finite, in diagnosis.json) as NaN, which matplotlib leaves out."""
    return [math.nan if v is None else v for v in values]


def _defined(xs, ys):
    pairs = [(x, y) for x, y in zip(xs, ys) if y is not None]
    return [x for x, _ in pairs], [y for _, y in pairs]


# ------------------------------------------------------------------------------------------------- lesions
def lesion(plt, results: list[dict], colors: dict, path: Path, what: str = "") -> str:
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), squeeze=False, gridspec_kw={"width_ratios": [1.6, 1]})
    left, right = axes[0]
    entries = []
    names = []
    for r in results:
        label, les = r["subject"]["label"], r["lesion"]
        single_bleu = [s["bleu"] for s in les["single"]]
        names = [s["sublayer"] for s in les["single"]] if len(les["single"]) > len(names) else names
        (line,) = left.plot(range(len(single_bleu)), single_bleu, "-o", ms=3.5, lw=1, color=colors[label])
        left.axhline(les["intact"], color=colors[label], ls=":", lw=1)
        entries.append((line, label))
        ks = [b["k"] for b in les["by_k"]]
        right.errorbar(ks, [b["mean"] for b in les["by_k"]], yerr=[b["std"] for b in les["by_k"]], fmt="-o", ms=4,
                       capsize=3, color=colors[label])
        right.plot([d["k"] for d in les["random"]], [d["bleu"] for d in les["random"]], ".", color=colors[label],
                   alpha=0.35)
    left.set_xticks(range(len(names)))
    left.set_xticklabels([_short(n) for n in names], rotation=90, fontsize=6.5)
    decoder_start = next((i for i, n in enumerate(names) if n.startswith("decoder")), None)
    if decoder_start:
        left.axvline(decoder_start - 0.5, color="grey", lw=0.8)
    left.set_ylabel(f"greedy BLEU ({results[0]['lesion']['sentences']} sentences)")
    left.set_title("one sublayer's residual branch deleted (dotted: nothing deleted)", fontsize=10)
    right.set_xlabel("sublayers deleted at once (k)")
    right.set_ylabel("BLEU (mean ± std; dots: each draw)")
    right.set_title(f"k random sublayers deleted ({results[0]['lesion']['draws']} draws each)", fontsize=10)
    right.xaxis.get_major_locator().set_params(integer=True)
    top = max(max([les["intact"], *(s["bleu"] for s in les["single"]), *(d["bleu"] for d in les["random"]),
                   *(b["mean"] + b["std"] for b in les["by_k"])]) for les in (r["lesion"] for r in results))
    for ax in (left, right):
        ax.set_ylim(0, max(0.05, 1.08 * top))
    fig.suptitle(f"lesion study: {_title(results, what)}", fontsize=11)
    return _legend_finish_save(plt, fig, entries, len(results) > 1, path)


def _short(name: str) -> str:
    """"encoder L3 self_attn" → "e3 self"."""
    parts = name.split()
    if len(parts) == 3 and parts[1].startswith("L"):
        return f"{parts[0][0]}{parts[1][1:]} {parts[2].split('_')[0]}"
    return name


# ------------------------------------------------------------------------------------- representation similarity
def grid(n: int, max_cols: int) -> tuple[int, int]:
    """(rows, columns) for n panels: at least √n and at most ``max_cols`` columns, so that the grid is no taller than
    wide, and of those the one with the fewest empty cells (ties: the narrower one)."""
    if n <= max_cols:
        return 1, max(n, 1)
    low = min(max_cols, math.ceil(math.sqrt(n)))
    best = min(range(low, max_cols + 1), key=lambda c: (math.ceil(n / c) * c - n, c))
    return math.ceil(n / best), best


def similarity(plt, results: list[dict], path: Path, what: str = "") -> str:
    """One CKA heat map per variant and side; panels in a compact grid, one colour bar."""
    panels = [(r, side) for r in results for side in ("encoder", "decoder")]
    per_row = grid(len(results), 3)[1] * 2  # a variant's two panels stay side by side
    rows = math.ceil(len(panels) / per_row)
    fig, axes = plt.subplots(rows, per_row, figsize=(2.9 * per_row + 1, 2.8 * rows + 0.6), squeeze=False)
    image = None
    for index, ax in enumerate(axes.flat):
        if index >= len(panels):
            ax.set_visible(False)
            continue
        r, side = panels[index]
        sim = r["similarity"][side]
        image = ax.imshow([_nan(row) for row in sim["cka"]], vmin=0, vmax=1, cmap="viridis", origin="lower")
        ticks = ["emb" if name == "embedding" else name.split()[-1] for name in sim["labels"]]
        every = max(1, math.ceil(len(ticks) / 10))  # deep stacks: every k-th layer named, so that labels never collide
        shown = [i for i in range(len(ticks)) if i % every == 0 or i == len(ticks) - 1]
        if len(shown) > 1 and shown[-1] - shown[-2] < every:  # the top layer named, not its close neighbour
            shown.pop(-2)
        for set_ticks, set_labels in ((ax.set_xticks, ax.set_xticklabels), (ax.set_yticks, ax.set_yticklabels)):
            set_ticks(shown)
            set_labels([ticks[i] for i in shown], fontsize=7)
        ax.set_title(f"{r['subject']['label']}: {side}" if len(results) > 1 else side, fontsize=9)
    fig.suptitle(f"linear CKA between layer outputs (1 = the same representation): {_title(results, what)}",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.92, 1))
    if image is not None:
        fig.colorbar(image, cax=fig.add_axes((0.935, 0.15, 0.015, 0.7)), label="linear CKA")
    return _save(plt, fig, path)

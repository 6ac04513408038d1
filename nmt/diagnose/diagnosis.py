"""One diagnosis: every measurement of a ``Subject`` (``diagnose``), and its files (``write_diagnosis``):
``diagnosis.json`` (every number), ``summary.md`` and the figures (``nmt.diagnose.figures``).

``cached_diagnosis`` is the study report's entry: it reuses a folder's ``diagnosis.json`` when it was made from
the same checkpoint file with the same settings.
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

from nmt import atomic
from nmt.diagnose import measures
from nmt.diagnose.settings import DiagnosisSettings
from nmt.diagnose.subject import Subject
from nmt.metrics import sacrebleu_score
from nmt.tables import markdown_table

FORMAT = 1
"""The version of diagnosis.json's layout; a cached diagnosis of another version is redone."""


def diagnose(subject: Subject, settings: DiagnosisSettings | None = None, progress=None) -> dict:
    """Every measurement of ``subject`` (see ``nmt.diagnose``) with ``settings`` (default: ``DiagnosisSettings()``),
    with what was measured and how long it took; ``progress`` gets a line as each part is done."""
    settings = settings or DiagnosisSettings()
    say = progress or (lambda message: None)
    model = subject.model
    seconds = {}
    batches = subject.batches(settings.batches, settings.max_tokens)
    if not batches:
        raise ValueError(f"no sentence pair to measure in the {settings.split} split")
    if getattr(model, "needs_data_init", False):  # e.g. Admin at initialisation: as train.py before the first update
        model.data_dependent_init(batches[0]["src"], batches[0]["tgt_in"])
    model.eval()

    started = time.time()
    flow = measures.gradient_flow(model, batches, subject.label_smoothing)
    seconds["gradient_flow"] = time.time() - started
    say(f"gradient flow: loss {flow['loss']:.3f}; encoder layer norms "
        + " ".join(f"{v:.3g}" for v in flow["encoder"]))

    started = time.time()
    hidden, similarity = measures.hidden_states_and_similarity(model, batches)
    seconds["hidden_states_and_similarity"] = time.time() - started
    say("hidden states and representation similarity measured")

    started = time.time()
    shattered = measures.shattered_gradients(model, batches, subject.label_smoothing, list(settings.scales),
                                             settings.lags, settings.seed)
    seconds["shattered_gradients"] = time.time() - started
    say("shattered gradients: correlation " + ", ".join(
        f"ε={s:g}: {_fmt(v)}" for s, v in zip(shattered["scales"], shattered["perturbation"])))

    started = time.time()
    translator = subject.translator()
    lesion = measures.lesion_study(
        model, lambda lines: translator.translate(lines, beam=1),
        lambda hyps: sacrebleu_score(hyps, subject.references)["score"], subject.sources, settings.max_k,
        settings.draws, settings.seed, progress=say)
    seconds["lesion"] = time.time() - started

    result = {
        "format": FORMAT,
        "subject": {"label": subject.label, "skip": subject.skip, "lambda": subject.lam, "origin": subject.origin,
                    "step": subject.step, "run": str(subject.run_dir) if subject.run_dir else None,
                    "corpus": subject.corpus, "split": subject.split, "sentences": len(subject.sources),
                    "batches": len(batches), "batch_sentences": [int(b["src"].size(0)) for b in batches],
                    "parameters": model.num_parameters(), "d_model": model.cfg.d_model,
                    "encoder_layers": model.cfg.encoder_layers, "decoder_layers": model.cfg.decoder_layers},
        "settings": settings.to_dict(),
        "gradient_flow": flow,
        "training_gradients": logged_layer_gradients(subject.run_dir / "metrics.csv") if subject.run_dir else None,
        "hidden_states": hidden,
        "shattered_gradients": shattered,
        "lesion": lesion,
        "similarity": similarity,
        "seconds": seconds,
    }
    result["summary"] = summary_numbers(result)
    return result


def _fmt(value, spec: str = ".3f") -> str:
    return "—" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, spec)


def logged_layer_gradients(metrics_csv: Path) -> dict | None:
    """The per-layer gradient norms a run logged with ``--log-layer-grads`` (``grad_norm/encoder.I``,
    ``grad_norm/decoder.I`` in metrics.csv): {"steps": [...], "encoder": [[layer 0 at each step], ...],
    "decoder": [...]}; None when it logged none."""
    if not metrics_csv.is_file():
        return None
    with open(metrics_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("grad_norm/encoder.0") not in (None, "") and r.get("step")]
    if not rows:
        return None
    out = {"steps": [int(float(r["step"])) for r in rows]}
    for side in measures.SIDES:
        columns = sorted((k for k in rows[0] if k.startswith(f"grad_norm/{side}.")),
                         key=lambda c: int(c.split(".")[-1]))
        out[side] = [[_number(r.get(c)) for r in rows] for c in columns]
    return out


def _number(text: str | None) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def summary_numbers(result: dict) -> dict:
    """The few numbers that say what the figures show (the report's table): see ``SUMMARY_COLUMNS``."""
    flow, hidden, shattered = result["gradient_flow"], result["hidden_states"], result["shattered_gradients"]
    lesion, similarity = result["lesion"], result["similarity"]
    out = {}
    for side in measures.SIDES:
        norms = flow[side]
        out[f"{side}_grad_bottom_over_top"] = norms[0] / norms[-1] if norms[-1] > 0 else None
        blocks = hidden[side][1:-1]  # the block outputs, without the embedding and the stack's output
        first, last = max(blocks[0]["rms"]), max(blocks[-1]["rms"])
        out[f"{side}_rms_growth"] = last / first if first > 0 else None
        cka = similarity[side]["cka"]
        neighbours = [cka[i][i + 1] for i in range(1, len(cka) - 1)]  # layer i against layer i + 1
        out[f"{side}_neighbour_cka"] = sum(neighbours) / len(neighbours) if neighbours else None
    scales = shattered["scales"]
    at = min(range(len(scales)), key=lambda i: abs(math.log(scales[i] / 0.1))) if scales else None
    out["gradient_correlation_scale"] = scales[at] if at is not None else None
    out["gradient_correlation"] = shattered["perturbation"][at] if at is not None else None
    out["gradient_autocorrelation_lag1"] = shattered["along_sentence"][0] if shattered["along_sentence"] else None
    out["bleu_intact"] = lesion["intact"]
    singles = [s["bleu"] for s in lesion["single"]]
    out["bleu_single_lesion_mean"] = sum(singles) / len(singles) if singles else None
    worst = min(lesion["single"], key=lambda s: s["bleu"]) if singles else None
    out["worst_single_lesion"] = worst["sublayer"] if worst else None
    out["bleu_worst_single_lesion"] = worst["bleu"] if worst else None
    last = lesion["by_k"][-1]
    out["lesion_max_k"], out["bleu_at_max_k"] = last["k"], last["mean"]
    return out


SUMMARY_COLUMNS = [
    ("bleu_intact", "BLEU intact", ".2f"),
    ("bleu_single_lesion_mean", "BLEU, one sublayer deleted (mean)", ".2f"),
    ("bleu_at_max_k", "BLEU, k sublayers deleted (k max)", ".2f"),
    ("encoder_grad_bottom_over_top", "grad. layer 1 / top, enc.", ".3g"),
    ("decoder_grad_bottom_over_top", "grad. layer 1 / top, dec.", ".3g"),
    ("encoder_rms_growth", "RMS last / first block, enc.", ".3g"),
    ("decoder_rms_growth", "RMS last / first block, dec.", ".3g"),
    ("gradient_correlation", "grad. correlation at ε", ".3f"),
    ("gradient_autocorrelation_lag1", "grad. autocorrelation, lag 1", ".3f"),
    ("encoder_neighbour_cka", "CKA of neighbour layers, enc.", ".3f"),
    ("decoder_neighbour_cka", "CKA of neighbour layers, dec.", ".3f"),
]
"""The summary table's columns: (key of ``summary_numbers``, heading, format)."""


def summary_table(results: list[dict]) -> str:
    """A Markdown table of ``summary_numbers``, one row per diagnosis."""
    head = ["variant"] + [title for _, title, _ in SUMMARY_COLUMNS]
    rows = [[r["subject"]["label"]] + [_fmt(r["summary"].get(key), spec) for key, _, spec in SUMMARY_COLUMNS]
            for r in results]
    return markdown_table(head, rows)


# ------------------------------------------------------------------------------------------------ files
FIGURES = ("gradient_flow.png", "hidden_states.png", "shattered_gradients.png", "lesion.png", "similarity.png")


def write_diagnosis(result: dict, out: Path, key: dict | None = None) -> list[str]:
    """Write ``diagnosis.json``, ``summary.md`` and the figures into ``out``; returns the figures' names (none without
    matplotlib). Every file is written to a temporary name and renamed; diagnosis.json comes last, so a folder
    whose diagnosis.json is there holds the rest. ``key`` (``cache_key``) is stored for ``cached_diagnosis``."""
    out.mkdir(parents=True, exist_ok=True)
    from nmt.diagnose import figures

    result = finite(result)
    pictures = figures.single(result, out)
    atomic.write_text(out / "summary.md", summary_markdown(result, pictures))
    atomic.write_text(out / "diagnosis.json", json.dumps({**result, "key": key}, indent=1, allow_nan=False) + "\n")
    return pictures


def finite(value):
    """``value`` with every NaN or infinite number replaced by None (JSON has no such numbers; a diverged model has)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def cache_key(checkpoint: Path, settings: DiagnosisSettings) -> dict:
    """What a cached diagnosis must match: the checkpoint file (its name, size and modification time) and the settings.

    Not its path: the cache sits beside the run, and a study reported from another folder, or moved, is the same study.
    """
    stat = checkpoint.stat()
    return {"format": FORMAT, "checkpoint": checkpoint.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "settings": settings.to_dict()}


def _read_cached(folder: Path) -> dict:
    """``folder``'s diagnosis.json, {} when there is none or it cannot be read."""
    path = folder / "diagnosis.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}


def cached_diagnosis(folder: Path, key: dict) -> dict | None:
    """The diagnosis in ``folder`` if it was made with ``key``, else None."""
    result = _read_cached(folder)
    return result if result and result.get("key") == key else None


def cached_without_checkpoint(folder: Path, settings: DiagnosisSettings) -> dict | None:
    """The diagnosis in ``folder`` if it was made with ``settings``, whatever the checkpoint's size and time: for a
    run kept without its checkpoints (a study folder saved light, checkpoints being hundreds of MB), whose diagnosis
    cannot be redone and stands for the checkpoint it was made on. None without one."""
    result = _read_cached(folder)
    key = result.get("key") or {}
    return result if key.get("format") == FORMAT and key.get("settings") == settings.to_dict() else None


def summary_markdown(result: dict, pictures: list[str]) -> str:
    """summary.md: what was diagnosed, the summary numbers, the figures and how to read them."""
    s, settings = result["subject"], result["settings"]
    step = "at initialisation" if s["step"] == 0 else (f"after {s['step']:,} updates" if s["step"] else "")
    total = sum(result["seconds"].values())
    lines = [
        f"# Diagnosis: {s['label']} {step}".rstrip(),
        "",
        (f"- Model: `{s['origin']}` ({s['parameters']:,} parameters, {s['encoder_layers']}+{s['decoder_layers']} "
         f"layers, d {s['d_model']})."),
        (f"- Data: the first {s['sentences']:,} sentences of the {s['split']} split of `{s['corpus']}`; the gradient, "
        f"hidden-state, shattered-gradient and similarity measurements on the first {s['batches']} batches of them "
        f"({sum(s['batch_sentences'])} sentences, ≤ {settings['max_tokens']} padded tokens a batch), the lesion study "
        f"on all of them (greedy decoding, sacreBLEU)."),
        (f"- {total / 60:.1f} min ("
         + ", ".join(f"{k.replace('_', ' ')} {v:.0f} s" for k, v in result["seconds"].items())
         + "). Every number is in `diagnosis.json`; the measurements are defined in `python -m nmt.diagnose --help` "
        "and the README's section on diagnosis."),
        "",
        summary_table([result]),
        "",
        (f"Gradient correlation at ε = {_fmt(result['summary']['gradient_correlation_scale'], 'g')}; k max = "
         f"{result['summary']['lesion_max_k']}. Worst single lesion: {result['summary']['worst_single_lesion']} "
         f"(BLEU {_fmt(result['summary']['bleu_worst_single_lesion'], '.2f')})."),
        "",
    ]
    for name in pictures:
        lines += [f"![{name}]({name})", ""]
    if not pictures:
        lines.append("The figures need matplotlib (`pip install nmt[report]`).")
    lines += ["## How to read it", "", *READING, ""]
    return "\n".join(lines)


READING = [
    ("- **gradient_flow.png**: the gradient norm of each layer's parameters on the measured batches (encoder solid, "
     "decoder dashed): falling towards layer 1, the gradient vanishes on its way down (Post-LN early in training); "
     "flat, it reaches every layer. With `--log-layer-grads`, the heat map shows the same over the first updates of "
     "training (metrics.csv)."),
    ("- **hidden_states.png**: the RMS of the residual stream after every sublayer (one line per stream): Pre-LN's "
     "grows with depth, Post-LN's stays at 1 (each block ends with a LayerNorm)."),
    ("- **shattered_gradients.png**: left, the correlation between the loss gradients w.r.t. the source embeddings "
     "at an input and at a copy perturbed by ε (relative to the embeddings' RMS): near 1 for all small ε, smooth; "
     "falling fast, shattered (Balduzzi et al. 2017). Right, the correlation of those gradients between positions "
     "k apart."),
    ("- **lesion.png**: greedy BLEU with one sublayer's residual branch deleted (left; the line is the intact model) "
     "and with k random sublayers deleted at once (right): a model that behaves like an ensemble of shallow paths "
     "degrades smoothly with k (Veit et al. 2016)."),
    ("- **similarity.png**: linear CKA between the outputs of every pair of layers: a bright block of neighbouring "
     "layers means they compute nearly the same representation (representation collapse)."),
]

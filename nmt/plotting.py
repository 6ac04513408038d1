"""Matplotlib for the report and the diagnosis: imported only when a figure is drawn, saved atomically.

matplotlib is an optional dependency (``pip install -e '.[report]'``): without it the callers write their
tables and say that figures were left out, so nothing here imports it at module level.
"""

from __future__ import annotations

import math
from pathlib import Path

from nmt.atomic import replacing


def pyplot():
    """``matplotlib.pyplot`` with the non-interactive Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(plt, fig, path: Path, dpi: int) -> str:
    """Write ``fig`` to ``path`` atomically (a temporary file renamed into place) and close it; returns the file
    name."""
    try:
        with replacing(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or None)
    finally:
        plt.close(fig)
    return path.name


def legend_below(fig, entries: list[tuple], order: list[str] | None = None, ncol: int = 5, fontsize: int = 8) -> None:
    """One legend for the whole figure, centred under its panels (never over a title or a curve), and the layout
    that leaves it room; without entries, just the layout.

    ``entries``: (handle, label) pairs from every panel, the first handle of each label kept; ``order``: the labels
    in the legend's order (default: as they first appear); at most ``ncol`` columns. Each legend row takes a fixed
    height in inches, so the gap under the panels does not depend on the figure's size.
    """
    handles: dict = {}
    for handle, label in entries:
        handles.setdefault(label, handle)
    labels = [label for label in (order if order is not None else handles) if label in handles]
    rows = 0
    if labels:
        ncol = min(len(labels), ncol)
        rows = math.ceil(len(labels) / ncol)
        fig.legend([handles[label] for label in labels], labels, loc="lower center", ncol=ncol, fontsize=fontsize,
                   frameon=False)
    bottom_inches = rows * 0.21 * fontsize / 8 + (0.06 if rows else 0.0)
    fig.tight_layout(rect=(0, bottom_inches / fig.get_size_inches()[1], 1, 1))

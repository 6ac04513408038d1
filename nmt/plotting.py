"""Matplotlib for the report and the diagnosis: imported only when a figure is drawn, saved atomically.

matplotlib is an optional dependency (``pip install -e '.[report]'``): without it the callers write their
tables and say that figures were left out, so nothing here imports it at module level.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
    """Write ``fig`` to ``path`` atomically (a temporary file renamed into place) and close it; returns the file name."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return path.name

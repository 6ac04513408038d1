"""nmt.plotting: a figure is written whole or not at all, and the figure is closed either way."""

from pathlib import Path

import pytest

from nmt.plotting import pyplot, save_figure

plt = pyplot()
pytestmark = pytest.mark.skipif(plt is None, reason="matplotlib is not installed (pip install -e '.[report]')")


def test_save_figure_writes_a_png_and_leaves_no_temporary_file(tmp_path: Path):
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    assert save_figure(plt, fig, tmp_path / "curve.png", dpi=50) == "curve.png"
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]
    assert not plt.fignum_exists(fig.number)


def test_a_failed_save_keeps_the_previous_figure(tmp_path: Path, monkeypatch):
    path = tmp_path / "curve.png"
    path.write_bytes(b"the previous figure")
    fig, _ = plt.subplots()

    def broken(*args, **kwargs):
        Path(args[0]).write_bytes(b"half a fig")
        raise OSError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        save_figure(plt, fig, path, dpi=50)
    assert path.read_bytes() == b"the previous figure"
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]
    assert not plt.fignum_exists(fig.number)

"""Files replaced whole or not at all (nmt.atomic), as checkpoints, configs, logs and translations are."""

import os

import pytest

from nmt import atomic


def test_the_new_file_replaces_the_old_one_only_when_complete(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")
    with atomic.replacing(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".results.json.") and tmp.name.endswith(".tmp")
        tmp.write_text("new, half")
        assert target.read_text() == "old"  # a reader meanwhile sees the old file
        tmp.write_text("new, whole")
    assert target.read_text() == "new, whole"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
    assert target.stat().st_mode & 0o777 == 0o666 & ~atomic.umask()  # the usual mode, not mkstemp's 0600


@pytest.mark.parametrize("durable", [False, True])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, durable):
    target = tmp_path / "config.yaml"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic.replacing(target, durable=durable) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_durable_and_plain_writes_create_the_file(tmp_path):
    with atomic.replacing(tmp_path / "a.bin", durable=True) as tmp:
        tmp.write_bytes(b"\x00\x01")
    atomic.write_text(tmp_path / "b.de", "Ein Hund läuft.\n")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.de").read_bytes() == "Ein Hund läuft.\n".encode()
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "b.de"]


def test_umask_is_read_without_being_changed():
    before = os.umask(0o027)
    try:
        assert atomic.umask() == 0o027 and atomic.umask() == 0o027
    finally:
        os.umask(before)

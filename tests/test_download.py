"""Named datasets that arrive by themselves: IWSLT'15 EN-VI downloaded and checked, WMT'14 failing fast offline.

No test touches the internet. A web server on 127.0.0.1 (``http_site.Site``, started by each test) serves
files under Stanford's names, and ``NMT_IWSLT15_URL`` points the download at it. Most tests serve as many
lines as the real corpus has (133,317 / 1,553 / 1,268, a few MB), so that they go through the unchanged
check of the real dataset; the others give ``download_named`` the line counts of their smaller files.
"""

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from http_site import STANFORD, Silent, Site, closed_port, stanford_files
from nmt.data.catalog import DATASETS, download_named, resolve_corpus
from nmt.data.corpus import DataError, read_lines
from nmt.data.download import unreachable

ROOT = Path(__file__).resolve().parents[1]
IWSLT = DATASETS["iwslt15-en-vi"]
SMALL = {"train": 40, "valid": 5, "test": 6}


@pytest.fixture
def root(tmp_path, monkeypatch):
    """An empty data root, downloads allowed."""
    monkeypatch.setenv("NMT_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("NMT_NO_DOWNLOAD", raising=False)
    return tmp_path / "data"


@pytest.fixture(scope="module")
def real_sized():
    """Files of the real corpus's line counts (about 9 MB), built once."""
    return stanford_files()


def with_lines(monkeypatch, lines: dict[str, int]) -> None:
    """For the rest of the test ``--data iwslt15-en-vi`` expects files of ``lines`` lines (small ones, not the real)."""
    smaller = replace(IWSLT, download=replace(IWSLT.download, lines=tuple(lines.items())))
    monkeypatch.setitem(DATASETS, "iwslt15-en-vi", smaller)


def serve(monkeypatch, site: Site) -> Site:
    monkeypatch.setenv("NMT_IWSLT15_URL", site.url)
    return site


def assert_nothing_kept(root: Path) -> None:
    """No dataset folder and no staging folder: the data root holds nothing of the download."""
    assert not root.exists() or list(root.iterdir()) == []


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- a download as train.py does it


def test_missing_iwslt_folder_is_downloaded_checked_and_kept(root, monkeypatch, capsys, real_sized):
    with serve(monkeypatch, Site(real_sized)) as site:
        corpus = resolve_corpus("iwslt15-en-vi", None, None)  # what train.py calls
        first = list(site.requests)
        again = resolve_corpus("iwslt15-en-vi", "vi", "en")  # the second time: the folder is there
        assert site.requests == first, "a dataset in place is never downloaded again"
    folder = root / "iwslt15-en-vi"
    assert (corpus.path, corpus.src, corpus.tgt, again.tgt) == (folder, "en", "vi", "en")
    assert sorted(name for name, _ in first) == sorted(real_sized) and all(r is None for _, r in first)
    assert sorted(p.name for p in root.iterdir()) == ["iwslt15-en-vi"]  # no staging folder left
    assert sorted(p.name for p in folder.iterdir()) == sorted([*real_sized, "origin.json"])
    for name, data in real_sized.items():
        assert (folder / name).read_bytes() == data
    # the files keep Stanford's names and are read as the splits they are
    assert [len(corpus.read_split(s)[0]) for s in ("train", "valid", "test")] == [133_317, 1_553, 1_268]
    assert corpus.read_split("test")[1][0] == "câu test số 0 của tôi ."
    assert corpus.protocol == IWSLT.protocol  # scored on its own tokens
    # origin.json says where each file came from; the SHA-256 that provenance.json records are those of the bytes served
    origin = json.loads((folder / "origin.json").read_text())
    assert origin["url"] == site.url and origin["dataset"] == "iwslt15-en-vi"
    assert {n: f["sha256"] for n, f in origin["files"].items()} == {n: sha256(d) for n, d in real_sized.items()}
    assert {Path(p).name: h for p, h in corpus.hashes().items()} == {n: sha256(d) for n, d in real_sized.items()}
    err = capsys.readouterr().err
    assert "downloading 6 files (about 32 MB" in err and f"from {site.url}/ into {folder}/" in err
    size = f"{len(real_sized['train.vi']) / 1e6:.1f} MB"
    # no terminal: plain lines
    assert f"downloading {site.url}/train.vi ({size})" in err and f"  train.vi: {size} in " in err


def test_train_py_downloads_then_trains_and_records_the_hashes(root, monkeypatch, tmp_path):
    """``python train.py --data iwslt15-en-vi`` on a fresh data root: download, train, provenance."""
    from conftest import synthetic_corpus
    from nmt.train import main

    small = {"train": 80, "valid": 10, "test": 10}
    # a training run on 133,317 pairs is too slow for a test: this dataset expects the line counts of small files
    with_lines(monkeypatch, small)
    source = synthetic_corpus(tmp_path / "corpus", **small)
    files = {f"{STANFORD[split]}.{lang}": (source / f"{split}.{side}").read_bytes()
             for split in small for lang, side in (("en", "en"), ("vi", "de"))}
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    with serve(monkeypatch, Site(files)):
        status = main(["--data", "iwslt15-en-vi", "--vocab-size", "400", "--max-tokens", "256", "--max-steps", "2",
                       "--log-every", "1", "--val-every", "0", "--run-dir", str(run)])
    assert status == 0
    data = json.loads((run / "provenance.json").read_text())
    text = json.dumps(data)
    for name, content in files.items():
        assert sha256(content) in text, f"provenance.json lacks the SHA-256 of {name}"
    assert json.loads((run / "results.json").read_text())["test"]["sentences"] == 10


# ---------------------------------------------------------------- faults: nothing half-written is ever in place


@pytest.mark.parametrize("ranges", [True, False], ids=["server-resumes", "server-without-ranges"])
def test_dropped_connection_leaves_nothing_in_place_and_a_rerun_completes(root, monkeypatch, capsys, real_sized,
                                                                           ranges):
    with serve(monkeypatch, Site(real_sized, ranges=ranges)) as site:
        site.drop["train.vi"] = 0.5  # every answer for train.vi stops halfway through what it sends
        with pytest.raises(DataError) as e:
            resolve_corpus("iwslt15-en-vi", None, None)
        message = str(e.value)
        assert "\n" not in message
        assert f"downloading it failed: {site.url}/train.vi: the connection closed after" in message
        assert "(3 tries)" in message and "https://nlp.stanford.edu/projects/nmt/data/iwslt15.en-vi/" in message
        assert not (root / "iwslt15-en-vi").exists()  # nothing in place: train.py would stop here
        assert "trying again in 1 s" in capsys.readouterr().err
        first_run = len(site.requests)

        site.drop.clear()  # the network is back
        corpus = resolve_corpus("iwslt15-en-vi", None, None)
        rerun = site.requests[first_run:]
    for name, data in real_sized.items():
        assert (corpus.path / name).read_bytes() == data, name
    assert read_lines(corpus.file("train", "vi"))[-1] == "câu train số 133316 của tôi ."
    assert sorted(p.name for p in root.iterdir()) == ["iwslt15-en-vi"]
    # the rerun fetched train.vi once, and the files after it; train.en, complete in the first run, was kept
    assert [n for n, _ in rerun] == ["train.vi", "tst2012.en", "tst2012.vi", "tst2013.en", "tst2013.vi"]
    asked = rerun[0][1]
    assert asked is not None  # the rerun asks for the rest of the part kept from the first run
    start = int(asked.removeprefix("bytes=").removesuffix("-"))
    if ranges:  # where the third try of the first run stopped: each try continued the one before
        assert len(real_sized["train.vi"]) * 0.8 < start < len(real_sized["train.vi"])
        assert [r is not None for r in site.gets("train.vi")] == [False, True, True, True]
    else:  # the server sends the whole file each time, which replaces the part
        assert start == len(real_sized["train.vi"]) // 2
        assert "the server sends the whole file again (no resume)" in capsys.readouterr().err


def test_a_file_changed_on_the_server_is_not_spliced(root, monkeypatch):
    """If-Range: the part kept from an earlier run is thrown away when the server's file is another one now."""
    files = stanford_files(SMALL)
    with serve(monkeypatch, Site(files)) as site:
        site.drop["train.en"] = 0.5
        with pytest.raises(DataError, match="the connection closed"):
            download_named(IWSLT, root / "iwslt15-en-vi", lines=SMALL)
        site.drop.clear()
        changed = files["train.en"].replace(b"sentence", b"phrase..")  # same size, other bytes
        site.files["train.en"] = changed
        download_named(IWSLT, root / "iwslt15-en-vi", lines=SMALL)
        assert site.gets("train.en")[-1] is not None  # a range was asked for, and the whole new file sent
    assert (root / "iwslt15-en-vi" / "train.en").read_bytes() == changed


@pytest.mark.parametrize("fault", ["one line missing", "not UTF-8"])
def test_a_file_that_fails_its_check_is_named_and_nothing_is_kept(root, monkeypatch, real_sized, fault):
    files = dict(real_sized)
    if fault == "one line missing":
        files["train.vi"] = files["train.vi"][: files["train.vi"].rindex(b"\n", 0, -1) + 1]  # 133,316 lines
        expected = "/train.vi has 133,316 lines, expected 133,317; nothing of the download was kept"
    else:
        lines = files["tst2013.vi"].split(b"\n")
        lines[6] = b"cau \xff"  # line 7
        files["tst2013.vi"] = b"\n".join(lines)
        expected = "/tst2013.vi:7: not valid UTF-8 (byte 0xff); nothing of the download was kept"
    with serve(monkeypatch, Site(files)) as site:
        with pytest.raises(DataError) as e:
            resolve_corpus("iwslt15-en-vi", None, None)
    message = str(e.value)
    assert "\n" not in message and f"downloading it failed: {site.url}{expected}" in message
    assert_nothing_kept(root)  # the files that checked out are gone too


def test_a_404_names_the_url_and_keeps_nothing(root, monkeypatch):
    files = stanford_files(SMALL)
    del files["tst2013.en"]
    with Site(files) as site:
        monkeypatch.setenv("NMT_IWSLT15_URL", site.url + "/")  # a trailing slash is fine
        with pytest.raises(DataError) as e:
            download_named(IWSLT, root / "iwslt15-en-vi", lines=SMALL)
        assert [n for n, _ in site.requests][-1] == "tst2013.en"
    message = str(e.value)
    assert f"downloading it failed: {site.url}/tst2013.en: HTTP 404 Not Found. Put the line-aligned files" in message
    assert_nothing_kept(root)


def test_offline_the_message_says_the_download_was_tried(root, monkeypatch):
    port = closed_port()
    monkeypatch.setenv("NMT_IWSLT15_URL", f"http://127.0.0.1:{port}/iwslt15")
    started = time.monotonic()
    with pytest.raises(DataError) as e:
        resolve_corpus("iwslt15-en-vi", None, None)
    assert time.monotonic() - started < 5  # a refused connection is not retried
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"--data iwslt15-en-vi: no folder {root / 'iwslt15-en-vi'}/, and downloading it failed: "
                              f"http://127.0.0.1:{port}/iwslt15/train.en: cannot connect (Connection refused). Put the")
    assert "tst2013.en" in message and "https://nlp.stanford.edu/projects/nmt/data/iwslt15.en-vi/" in message
    assert_nothing_kept(root)


# ---------------------------------------------------------------- turned off


def test_no_download_flag_and_environment_variable(root, monkeypatch, tmp_path, capsys):
    from nmt.train import main

    monkeypatch.chdir(tmp_path)
    with serve(monkeypatch, Site(stanford_files(SMALL))) as site:
        assert main(["--data", "iwslt15-en-vi", "--no-download", "--run-dir", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"train.py: error: --data iwslt15-en-vi: no folder {root / 'iwslt15-en-vi'}/, and "
                              "downloading is turned off (--no-download). Put the line-aligned files")
        monkeypatch.setenv("NMT_NO_DOWNLOAD", "1")
        with pytest.raises(DataError, match=r"downloading is turned off \(NMT_NO_DOWNLOAD=1\)\. Put"):
            resolve_corpus("iwslt15-en-vi", None, None)
        assert site.requests == []
    assert not (tmp_path / "run").exists()
    assert_nothing_kept(root)


# ---------------------------------------------------------------- several processes


def test_other_processes_of_a_node_wait_for_the_first(root, monkeypatch):
    """Under data parallelism local rank 0 downloads; the others (``wait=True``) wait for the folder, fetch nothing."""
    files = stanford_files(SMALL)
    with_lines(monkeypatch, SMALL)
    waited = {}
    with serve(monkeypatch, Site(files)) as site:
        def wait():
            waited["corpus"] = resolve_corpus("iwslt15-en-vi", None, None, wait=True)

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(1.0)
        assert waiter.is_alive() and site.requests == []  # it waits, and asks nothing
        first = resolve_corpus("iwslt15-en-vi", None, None)
        waiter.join(timeout=30)
    assert not waiter.is_alive() and waited["corpus"].files() == first.files()
    assert sorted(n for n, _ in site.requests) == sorted(files)  # each file once


def test_two_runs_at_once_on_one_host_download_once(root, monkeypatch, tmp_path):
    """Two train.py processes started together (a sweep with --parallel 2): one downloads, the other waits its turn."""
    code = "\n".join([
        "from dataclasses import replace",
        "from nmt.data import catalog",
        "d = catalog.DATASETS['iwslt15-en-vi']",
        f"catalog.DATASETS[d.name] = replace(d, download=replace(d.download, lines={tuple(SMALL.items())!r}))",
        "from nmt.data.catalog import resolve_corpus",
        "print(resolve_corpus('iwslt15-en-vi', None, None).path)",
    ])
    files = stanford_files(SMALL)
    with Site(files, delay_s=0.3) as site:  # six files: about two seconds for the first process
        env = {**os.environ, "NMT_IWSLT15_URL": site.url, "PYTHONPATH": str(ROOT)}
        procs = [subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outputs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-2000:]
        assert out.strip() == str(root / "iwslt15-en-vi")
    assert sorted(n for n, _ in site.requests) == sorted(files)  # each file once
    assert any("another process is downloading into" in err for _, err in outputs)
    assert sorted(p.name for p in root.iterdir()) == ["iwslt15-en-vi"]
    for name, data in files.items():
        assert (root / "iwslt15-en-vi" / name).read_bytes() == data


# ---------------------------------------------------------------- WMT'14: the hub, offline


def hub_env(tmp_path: Path, endpoint: str) -> dict:
    """No offline switch, nothing cached, no mirror, and the hub at ``endpoint``."""
    drop = ("NMT_HF_MIRROR", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "NMT_NO_DOWNLOAD")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(NMT_DATA_ROOT=str(tmp_path / "data"), HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=endpoint,
               PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return env


def test_wmt14_offline_fails_within_seconds_with_the_clear_message(tmp_path):
    pytest.importorskip("datasets")
    endpoint = f"http://127.0.0.1:{closed_port()}"  # the hub cannot be reached, as on a machine without network
    env = hub_env(tmp_path, endpoint)
    # the lookup itself, timed inside the process (datasets' own retries take 25-40 s)
    code = "\n".join([
        "import time",
        "from nmt.data.catalog import resolve_corpus",
        "from nmt.data.corpus import DataError",
        "started = time.monotonic()",
        "try:",
        "    resolve_corpus('wmt14-en-de', None, None)",
        "except DataError as e:",
        "    print(f'{time.monotonic() - started:.2f}', e)",
    ])
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=env)
    seconds, message = proc.stdout.split(" ", 1)
    assert float(seconds) < 10, proc.stdout + proc.stderr[-3000:]
    assert message.startswith(f"--data wmt14-en-de: not found locally, and loading wmt/wmt14 (de-en) failed: "
                              f"the Hugging Face hub {endpoint} cannot be reached (Connection refused), and the "
                              "datasets cache holds no copy. Put the line-aligned files train.en, train.de")
    assert "NMT_HF_MIRROR=DIR" in message and "\n" not in message.strip()
    assert (f"the Hugging Face hub {endpoint} cannot be reached (Connection refused): looking in the datasets cache "
            "only") in proc.stderr

    # train.py, the whole command: status 2 and that message as its one error line, nothing written. Its wall time
    # is not asserted: importing torch dominates it and varies with the machine's load (21 s measured next to three
    # busy processes); the lookup's own time, which is what could hang, is bounded above.
    command = [sys.executable, str(ROOT / "train.py"), "--data", "wmt14-en-de", "--run-dir", str(tmp_path / "r")]
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == f"train.py: error: {message.strip()}"
    assert not (tmp_path / "data" / "wmt14-en-de").exists() and not (tmp_path / "r").exists()


def test_wmt14_no_download_uses_the_cache_only(tmp_path):
    pytest.importorskip("datasets")
    with Silent() as port:  # a hub that would never answer: not asked at all
        started = time.monotonic()
        proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--data", "wmt14-en-de", "--no-download",
                               "--run-dir", str(tmp_path / "r")], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120, env=hub_env(tmp_path, f"http://127.0.0.1:{port}"))
    assert time.monotonic() - started < 20 and proc.returncode == 2, proc.stderr[-3000:]
    assert ("failed: downloading is turned off (--no-download), and the datasets cache holds no copy. Put"
            in proc.stderr.strip().splitlines()[-1])


def test_the_hub_probe_gives_up_on_a_silent_server_and_accepts_any_answer():
    with Silent() as port:
        started = time.monotonic()
        why = unreachable(f"http://127.0.0.1:{port}/api/datasets/wmt/wmt14", timeout=1)
        assert time.monotonic() - started < 3 and why in ("timed out", "no answer within 1 s")
    assert unreachable(f"http://127.0.0.1:{closed_port()}/", timeout=5) == "Connection refused"
    with Site({}) as site:  # a 404 is an answer: the server is there
        assert unreachable(site.url + "/api/datasets/wmt/wmt14", timeout=5) is None

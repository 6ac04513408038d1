"""Files fetched over HTTP(S) into a folder that appears complete and checked, or not at all.

``fetch_folder(files, folder, check)`` downloads every ``(url, name)`` with the standard library (urllib)
into a hidden staging folder beside ``folder`` (``.<folder name>.download-<host>``), checks each file as
soon as it is complete, and renames the staging folder to ``folder`` only when every file is there and
has passed its check. ``folder`` therefore never holds a partial or unchecked download, and a reader that
sees it sees all of it.

- **Interrupted transfers.** A file in transfer is ``<name>.part`` in the staging folder. A connection that
  drops (or stalls for ``TIMEOUT_S``) in the middle of a file is tried again at once, up to ``ATTEMPTS``
  times, continuing with an HTTP ``Range`` request where the server honours it (``If-Range`` makes sure
  the file did not change meanwhile) and from the start otherwise. After that, or after the process was
  killed, the staging folder stays and the next call continues where the last one stopped.
- **Nothing kept on a bad answer.** An HTTP error such as 404, or a file that fails ``check``, deletes the
  staging folder: nothing of that download remains.
- **Several processes.** Processes of one host that fetch the same folder at once take turns through a
  lock on the staging folder (``fcntl.flock``); whoever waited then finds the folder complete. Hosts that
  share a file system each use their own staging folder; when both finish, the second rename loses and
  its copy is dropped.
- **Progress**, on ``out`` (standard error by default): a bar redrawn in place on a terminal; otherwise
  (a log file, CI) plain lines, one when a file starts, at most one every ``PLAIN_EVERY_S`` seconds,
  and one when it is done.

``unreachable(url, timeout)`` tells within ``timeout`` seconds whether a server answers at all, for
callers that would otherwise wait through a library's retries.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from nmt.data.corpus import DataError, sha256_file
from nmt.data.publish import publish

try:
    import fcntl
except ImportError:  # not POSIX: one process at a time is assumed
    fcntl = None

TIMEOUT_S = 30
"""Seconds without an answer (connecting, or between two blocks of data) before a transfer counts as stalled."""
ATTEMPTS = 3
"""Tries per file when the connection drops in the middle of it (the later ones resume where it stopped)."""
RETRY_DELAYS_S = (1, 2)
"""Seconds to wait before the second and the later tries."""
PLAIN_EVERY_S = 10
"""Without a terminal, a progress line at most this often per file."""
BLOCK = 1 << 16
LOCK = ".lock"
USER_AGENT = f"nmt (Python-urllib/{sys.version_info.major}.{sys.version_info.minor})"


class DownloadError(DataError):
    """A download that failed; the message names the URL and says why, in one line.

    ``keep``: what was downloaded so far stays in the staging folder for the next run to continue (a
    connection that failed); otherwise (an HTTP error, a file that failed its check) nothing is kept.
    """

    def __init__(self, message: str, keep: bool = False):
        super().__init__(message)
        self.keep = keep


class _Interrupted(Exception):
    """A transfer that stopped in the middle and may be continued (the connection dropped or stalled)."""


def fetch_folder(files: list[tuple[str, str]], folder: Path, check: Callable[[Path], None] | None = None,
                 origin: dict | None = None, out: TextIO | None = None) -> dict:
    """Download each ``(url, name)`` into ``folder``, which is created complete and checked, or not at all.

    ``check(path)`` is called on each downloaded file before anything is kept and raises ``DataError``
    (naming ``path``, which the message then replaces by the file's URL) if the file is not what it should
    be. Written into the folder beside the files: ``origin.json``, the ``origin`` mapping plus each file's
    URL, size and SHA-256. Returns that mapping. If ``folder`` already exists nothing is fetched and ``{}``
    is returned. Raises ``DownloadError``.
    """
    out = out or sys.stderr
    if folder.is_dir():
        return {}
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.download-{socket.gethostname()}"
    lock = _lock(staging, out)
    try:
        if folder.is_dir():  # another process finished it while this one waited
            shutil.rmtree(staging, ignore_errors=True)
            return {}
        try:
            record = {**(origin or {}), "files": {}}
            for url, name in files:
                path = staging / name
                if not path.is_file():
                    _download(url, staging / f"{name}.part", out)
                    os.replace(staging / f"{name}.part", path)
                    (staging / f"{name}.part.validator").unlink(missing_ok=True)
                if check is not None:
                    try:
                        check(path)
                    except DataError as e:
                        why = str(e).replace(str(path), url)
                        raise DownloadError(f"{why}; nothing of the download was kept") from None
                record["files"][name] = {"url": url, "bytes": path.stat().st_size, "sha256": sha256_file(path)}
            (staging / "origin.json").write_text(json.dumps(record, indent=2) + "\n")
            if not publish(staging, folder):  # another host's copy got there first
                shutil.rmtree(staging, ignore_errors=True)
                return {}
            # The lock file moved along (a process arriving just before the rename still waits on it, then finds
            # it gone from the staging folder and looks again); it is no part of the result.
            (folder / LOCK).unlink(missing_ok=True)
            return record
        except DownloadError as e:
            if not e.keep or not _holds_progress(staging):
                shutil.rmtree(staging, ignore_errors=True)
            raise
        except OSError as e:
            raise DownloadError(f"cannot write {staging}/ ({e.strerror or e})") from None
    finally:
        os.close(lock)


def unreachable(url: str, timeout: float) -> str | None:
    """Why the server of ``url`` gives no answer within ``timeout`` seconds; None when it answers (any status).

    A HEAD request through urllib (so proxies from the environment are used), run in a thread that is
    given up after ``timeout`` seconds: even a name lookup that hangs cannot make the caller wait longer.
    """
    found: list[str | None] = []

    def probe() -> None:
        try:
            request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
            urllib.request.urlopen(request, timeout=timeout).close()
        except urllib.error.HTTPError:
            pass  # an answer, even 401 or 404: the server is there
        except (OSError, http.client.HTTPException, ValueError) as e:
            found.append(_why(e))
            return
        found.append(None)

    thread = threading.Thread(target=probe, name="nmt-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return found[0] if found else f"no answer within {timeout:g} s"


# ---------------------------------------------------------------- one file


def _download(url: str, part: Path, out: TextIO) -> None:
    """Fetch ``url`` into ``part`` (continuing what it holds), trying again after a dropped connection."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _transfer(url, part, out)
            return
        except _Interrupted as e:
            if attempt == ATTEMPTS:
                raise DownloadError(f"{url}: {e} ({ATTEMPTS} tries); what was downloaded is kept in {part.parent}/ "
                                    "and the next run continues it", keep=True) from None
            delay = RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S)) - 1]
            print(f"{url}: {e}; trying again in {delay} s", file=out, flush=True)
            time.sleep(delay)


def _transfer(url: str, part: Path, out: TextIO) -> None:
    """One request for the rest of ``url``: append it to ``part`` (or rewrite ``part`` if the server sends it all)."""
    have = part.stat().st_size if part.is_file() else 0
    validator_file = part.with_name(part.name + ".validator")
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
        if validator_file.is_file():  # the server sends everything if the file changed since: no mixed versions
            headers["If-Range"] = validator_file.read_text().strip()
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part is no prefix of the file: start again
            part.unlink()
            raise _Interrupted("the server refused to continue the part downloaded") from None
        if e.code in (408, 429) or e.code >= 500:
            raise _Interrupted(f"HTTP {e.code} {e.reason}") from None
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
        # no connection at all (offline, a wrong host): reported at once; what was downloaded stays for the next run
        raise DownloadError(f"{url}: cannot connect ({_why(e)})", keep=True) from None
    with response:
        total = _int(response.headers.get("Content-Length"))
        if response.status == 206:
            match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", "").strip())
            if match is None or int(match[1]) != have:
                part.unlink()
                raise _Interrupted("the server answered with another part of the file")
            total = int(match[2]) if match[2] != "*" else None
            mode = "ab"
        else:  # the whole file: the server does not resume, or the file changed
            if have:
                print(f"{url}: the server sends the whole file again (no resume)", file=out, flush=True)
            have, mode = 0, "wb"
        validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
        if validator and not validator.startswith("W/"):  # a weak ETag may not be used in If-Range
            validator_file.write_text(validator + "\n")
        else:
            validator_file.unlink(missing_ok=True)
        progress = _Progress(url, out, have, total)
        complete = False
        try:
            with open(part, mode) as f:
                while True:
                    try:
                        block = response.read(BLOCK)
                    except (OSError, http.client.HTTPException) as e:
                        raise _Interrupted(f"the connection dropped after {_size(have)} of {_size(total)} "
                                           f"({_why(e)})") from None
                    if not block:
                        break
                    f.write(block)
                    have += len(block)
                    progress.show(have)
                f.flush()
                os.fsync(f.fileno())
            complete = total is None or have == total
        finally:
            progress.end(have, complete)
    if not complete:
        raise _Interrupted(f"the connection closed after {_size(have)} of {_size(total)}")


class _Progress:
    """A download's progress on ``out``: a bar redrawn in place on a terminal, plain lines otherwise."""

    def __init__(self, url: str, out: TextIO, done: int, total: int | None):
        self.name, self.out, self.start, self.total = url.rsplit("/", 1)[-1] or url, out, done, total
        self.terminal = hasattr(out, "isatty") and out.isatty()
        self.began = self.shown = time.monotonic()
        if not self.terminal:
            again = f", continuing after {_size(done)}" if done else ""
            self._print(f"downloading {url} ({_size(total)}{again})")
        else:
            self._draw(done, self.began)

    def show(self, done: int) -> None:
        now = time.monotonic()
        if self.terminal and now - self.shown >= 0.1:
            self._draw(done, now)
        elif not self.terminal and now - self.shown >= PLAIN_EVERY_S:
            self._print(f"  {self.name}: {self._amount(done)}, {self._rate(done, now)}")
            self.shown = now

    def end(self, done: int, complete: bool) -> None:
        now = time.monotonic()
        if self.terminal:
            self._draw(done, now, end="" if complete else "  stopped")
            self.out.write("\n")
            self.out.flush()
        elif complete:
            self._print(f"  {self.name}: {_size(done)} in {now - self.began:.1f} s ({self._rate(done, now)})")
        else:
            self._print(f"  {self.name}: stopped at {self._amount(done)}")

    def _draw(self, done: int, now: float, end: str = "") -> None:
        width = 30
        filled = int(width * done / self.total) if self.total else 0
        bar = "#" * filled + "." * (width - filled) if self.total else "?" * width
        self.out.write(f"\r{self.name:<14} [{bar}] {self._amount(done)}  {self._rate(done, now)}{end}  ")
        self.out.flush()
        self.shown = now

    def _amount(self, done: int) -> str:
        if not self.total:
            return _size(done)
        return f"{100 * done / self.total:3.0f}% of {_size(self.total)}"

    def _rate(self, done: int, now: float) -> str:
        return f"{(done - self.start) / max(now - self.began, 1e-3) / 1e6:.1f} MB/s"

    def _print(self, line: str) -> None:
        print(line, file=self.out, flush=True)


# ---------------------------------------------------------------- helpers


def _lock(staging: Path, out: TextIO) -> int:
    """Create ``staging`` if needed and hold its lock; returns the descriptor whose closing releases it.

    The lock file moves or vanishes with the folder (renamed into place, or deleted); whoever acquired the
    lock of a file that is no longer ``staging/.lock`` starts over, so two processes never share a folder.
    """
    told = False
    while True:
        staging.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(staging / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the folder was renamed or deleted in between
            continue
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not told:
                print(f"another process is downloading into {staging}/; waiting for it", file=out, flush=True)
                told = True
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            current = os.stat(staging / LOCK).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            return fd
        os.close(fd)


def _holds_progress(staging: Path) -> bool:
    """The staging folder holds downloaded bytes worth keeping for the next run."""
    if not staging.is_dir():
        return False
    return any(p.name != LOCK and not p.name.endswith(".validator") and p.stat().st_size for p in staging.iterdir())


def _why(e: BaseException) -> str:
    """A short reason from a urllib/socket error: "Connection refused", "Name or service not known", "timed out"."""
    reason = e.reason if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError) else e
    if isinstance(reason, BaseException):
        text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    else:
        text = str(reason)
    return " ".join(text.split())


def _int(text: str | None) -> int | None:
    return int(text) if text and text.strip().isdigit() else None


def _size(n: int | None) -> str:
    """Bytes for people: "13.6 MB", "140 kB", "? bytes" when unknown."""
    if n is None:
        return "? bytes"
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB" if n >= 1e3 else f"{n} bytes"

"""Safe outputs: no command ever destroys an input, leaves a torn file, or shares an output.

Every file or folder a command writes goes through this module:

* :func:`check_output` refuses, with one :class:`~fluxmem.errors.OutputError` line, an output
  path that is empty, is (or resolves to, through symbolic links, ``..`` or a hard link) one of
  the run's inputs, lies inside an input directory (a model), would write over an input it holds,
  is a file where a folder is needed (or the reverse), or cannot be written. Commands call it
  before the model loads.
* :func:`claim_output` checks and then holds the output's lock for the run: a second run on the
  same output refuses with one line naming the first (pid, start time, command). The lock is an
  ``fcntl.flock`` on a lock file next to the output (a file ``.NAME.lock`` beside an output file;
  ``.fluxmem.lock`` inside an output folder). The kernel drops it when the process ends, however it
  ends, so no stale lock survives a crash (POSIX: Linux, macOS). (``filelock``, the usual library, truncates the lock file
  when it tries a lock, which would erase the holder's name before the refusal can read it.)
* :func:`write_text` / :func:`atomic_file` / :func:`atomic_dir` write to a temporary name in the
  same folder and rename into place (``os.replace``): a crash leaves the previous file or none,
  never a torn one.
* :class:`RecordFile` / :func:`append_line` append JSON lines one whole line at a time (one write,
  flushed and fsynced); a partial line an earlier crash left at the end is dropped before the next
  line is written, so readers never see a torn line followed by more records.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from .errors import OutputError

__all__ = [
    "RecordFile",
    "append_line",
    "atomic_dir",
    "atomic_file",
    "check_output",
    "claim_output",
    "output_lock",
    "write_text",
]

PathLike = str | os.PathLike
#: an input (or several: a list of paths) by the name the message gives it, e.g. {"video": "clip.mp4"}
Inputs = Mapping[str, "PathLike | Iterable[PathLike] | None"]

DIR_LOCK = ".fluxmem.lock"


# ----------------------------------------------------------------------------------- checks


def check_output(
    path: PathLike | None,
    *,
    flag: str = "--out",
    kind: str = "file",
    inputs: Inputs | None = None,
    folders: Inputs | None = None,
    writes: Iterable[str] | None = (),
    what: str = "output",
) -> Path:
    """Refuse an output ``path`` that would destroy an input or cannot be written; return it.

    ``kind``: ``"file"`` or ``"dir"`` (a folder the command writes files into).
    ``inputs``: paths the run reads, by name; a path that does not exist here (a Hugging Face id,
    a camera, a URL) is passed over. An input directory is read whole (a model): nothing may be
    written inside it. ``folders``: directories that only hold inputs (the benchmark's videos):
    the output may not be one of them, but may lie inside. ``writes`` (folder outputs): the names
    the command writes under the folder (``fnmatch`` patterns; ``"overlays/"`` a sub-folder);
    ``None`` when unknown (then no input may lie inside the folder at all). ``what`` names the
    output in messages ("answers", "pictures").
    """
    if kind not in ("file", "dir"):
        raise ValueError(f"kind must be 'file' or 'dir', got {kind!r}")
    if path is None or not str(path).strip():
        form = "a file name" if kind == "file" else "a folder path"
        raise OutputError(f"{flag} is empty (an empty path is not the working directory); give {form} for the {what}.")
    given = str(path)
    out = _resolve(path)
    where = f"{flag} {given!r}"
    if kind == "file" and out.is_dir():
        raise OutputError(f"{where} is a directory; give a file name for the {what}, e.g. {str(Path(given) / 'answers.jsonl')!r}.")
    if kind == "dir" and out.exists() and not out.is_dir():
        raise OutputError(f"{where} is a file; the {what} go into a folder: pass a folder path (created if missing).")
    for name, value in _named_paths(inputs):
        _refuse_input(where, out, kind, name, value, writes, whole=True)
    for name, value in _named_paths(folders):
        _refuse_input(where, out, kind, name, value, writes, whole=False)
    _check_writable(where, out, kind, given)
    return Path(given)


def _resolve(path: PathLike) -> Path:
    # realpath resolves links before "..", so "link/../x" is where the link really points
    return Path(os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(path)))))


def _named_paths(inputs: Inputs | None) -> Iterator[tuple[str, str]]:
    for name, value in (inputs or {}).items():
        if value is None:
            continue
        values = [value] if isinstance(value, (str, os.PathLike)) else list(value)
        for item in values:
            if item is not None and str(item).strip():
                yield name, os.fspath(item)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # hard links: one inode under two names
    except OSError:
        return False


def _inside(child: Path, parent: Path) -> bool:
    return child != parent and parent in child.parents


def _refuse_input(where: str, out: Path, kind: str, name: str, given: str, writes, *, whole: bool) -> None:
    source = _resolve(given)
    if not source.exists():
        return  # a hub id, a camera, a URL: nothing on this disk to protect
    label = f"the {name} {given!r}"
    if out == source or _same_file(out, source):
        raise OutputError(f"{where} is {label}; writing there would destroy it: pick another path.")
    if whole and source.is_dir() and _inside(out, source):
        raise OutputError(f"{where} lies inside {label}; writing there would change it: pick a path outside it.")
    if kind == "dir" and _inside(source, out):
        first = source.relative_to(out).parts[0]
        if writes is None:
            raise OutputError(f"{where} holds {label}, and the run writes into that folder: pick an empty or new folder.")
        if any(fnmatch.fnmatch(first, pattern.rstrip("/")) for pattern in writes):
            raise OutputError(
                f"{where} holds {label} as {first!r}, which the run writes: pick another folder "
                "or move the input out of it."
            )


def _check_writable(where: str, out: Path, kind: str, given: str) -> None:
    if kind == "file":
        if not out.parent.is_dir():
            folder = os.path.dirname(given) or str(out.parent)
            raise OutputError(f"{where}: the folder {folder!r} does not exist; create it first or pick another path.")
        if out.exists() and not os.access(out, os.W_OK):
            raise OutputError(f"{where} is read-only; pick another path.")
        folder = out.parent
    else:
        folder = out
        while not folder.exists():  # the nearest existing ancestor must let the folder be made
            folder = folder.parent
        if not folder.is_dir():
            raise OutputError(f"{where}: {str(folder)!r} is a file, so the folder cannot be made; pick another path.")
    try:  # a real probe: os.access is wrong on read-only mounts and for root
        fd, probe = tempfile.mkstemp(prefix=".fluxmem-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        reason = "read-only file system" if error.errno == errno.EROFS else (error.strerror or "not writable").lower()
        raise OutputError(f"{where} cannot be written ({reason} at {str(folder)!r}); pick another path.") from None


# ----------------------------------------------------------------------------------- locks


def lock_path(path: PathLike, *, kind: str = "file", name: str | None = None) -> Path:
    """The lock file of an output: ``.NAME.lock`` beside a file, ``.fluxmem.lock`` (or
    ``.fluxmem.NAME.lock``) inside a folder."""
    out = _resolve(path)
    if kind == "dir":
        return out / (DIR_LOCK if name is None else f".fluxmem.{name}.lock")
    return out.parent / f".{out.name}{'' if name is None else '.' + name}.lock"


_held: dict[Path, list] = {}  # lock file -> [fd, count]: one process may nest claims on one output
_held_guard = threading.Lock()


def _command_line() -> str:
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if program in ("__main__.py", "fluxmem"):
        program = "fluxmem"
    line = " ".join([program, *sys.argv[1:]])
    return line if len(line) <= 200 else line[:197] + "..."


def _holder(fd: int) -> str:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"pid {data['pid']}, started {data['started']}: {data['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "it has not written its name yet"


@contextlib.contextmanager
def output_lock(path: PathLike, *, flag: str = "--out", kind: str = "file", name: str | None = None) -> Iterator[Path]:
    """Hold the lock of an output while the block runs; refuse at once (one line naming the
    holder) when another run holds it. Nested use in one process is allowed. Needs POSIX ``fcntl``
    (Linux, macOS); elsewhere the output is not locked, and a warning says so."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        logging.getLogger(__name__).warning("outputs are not locked on this platform (no fcntl): run one command per output.")
        yield lock_path(path, kind=kind, name=name)
        return

    lock = lock_path(path, kind=kind, name=name)
    with _held_guard:
        if lock in _held:
            _held[lock][1] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield lock
        finally:
            with _held_guard:
                _held[lock][1] -= 1
        return
    fd = _acquire(lock, fcntl, f"{flag} {os.fspath(path)!r}")
    with _held_guard:
        _held[lock] = [fd, 1]
    try:
        yield lock
    finally:
        with _held_guard:
            del _held[lock]
        with contextlib.suppress(OSError):
            os.unlink(lock)  # before unlocking: a waiting run then retries on a fresh file
        os.close(fd)


def _acquire(lock: Path, fcntl, where: str) -> int:
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise OutputError(f"{where}: cannot create the lock file {str(lock)!r} ({error.strerror}); pick another path.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputError(
                f"{where} is being written by another run ({holder}); wait for it to end or pick another path."
            ) from None
        try:  # the holder may have unlinked the file between our open and our lock: retry then
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    record = {"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "command": _command_line()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
    return fd


@contextlib.contextmanager
def claim_output(
    path: PathLike | None,
    *,
    flag: str = "--out",
    kind: str = "file",
    inputs: Inputs | None = None,
    folders: Inputs | None = None,
    writes: Iterable[str] | None = (),
    what: str = "output",
    lock_name: str | None = None,
) -> Iterator[Path]:
    """:func:`check_output`, then (a folder created if missing) the output's lock held for the
    block. ``lock_name`` separates the locks of cooperating processes (the ranks of one run)."""
    out = check_output(path, flag=flag, kind=kind, inputs=inputs, folders=folders, writes=writes, what=what)
    if kind == "dir":
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"{flag} {str(path)!r}: cannot create the folder ({error.strerror}); pick another path.") from None
    with output_lock(out, flag=flag, kind=kind, name=lock_name):
        yield out


# ----------------------------------------------------------------------------------- atomic writes


def _temporary_name(path: Path) -> Path:
    # same folder (os.replace stays on one file system), same suffix (writers pick the format by it)
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{threading.get_ident() % 10**6}{path.suffix}")


def _fsync_path(path: Path) -> None:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        return  # e.g. folders cannot be opened on this platform
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix) for any writer (an image, a video, a
    figure); when the block ends without error it is synced and renamed onto ``path``, else removed.
    A symbolic link at ``path`` is followed: its target is replaced, the link stays."""
    target = Path(os.path.realpath(path))
    temporary = _temporary_name(target)
    try:
        yield temporary
        _fsync_path(temporary)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    _fsync_path(target.parent)


def write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_file(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path`` to fill (``save_pretrained``); when the block ends
    without error it takes the place of ``path`` (a previous folder there is removed), else it is
    removed. A crash leaves the previous folder whole, or the new one."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    try:
        yield temporary
        for file in temporary.rglob("*"):
            if file.is_file():
                _fsync_path(file)
        previous = target.with_name(f".{target.name}.old-{os.getpid()}")
        if target.exists():
            os.replace(target, previous)
        os.replace(temporary, target)
        shutil.rmtree(previous, ignore_errors=True)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    _fsync_path(target.parent)


def move_into(source: PathLike, folder: PathLike) -> None:
    """Move every file of the folder ``source`` into ``folder`` (same file system), each by one
    rename, so each file is either the previous one or the new one."""
    source, folder = Path(source), Path(folder)
    for file in sorted(source.rglob("*")):
        if file.is_file():
            destination = folder / file.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            _fsync_path(file)
            os.replace(file, destination)
    _fsync_path(folder)


# ----------------------------------------------------------------------------------- records


class RecordFile:
    """A JSON-lines file written one whole line at a time (``append``): each line goes out in one
    write, flushed and fsynced. ``fresh=True`` starts an empty file (replacing any previous one
    atomically); otherwise a partial last line left by a crash is dropped first."""

    def __init__(self, path: PathLike, *, fresh: bool = False, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        if fresh:
            write_bytes(self.path, b"")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _drop_partial_line(self._fd)
        except BaseException:
            os.close(self._fd)
            raise

    def append(self, line: str) -> None:
        """Write ``line`` (a newline is added when missing) at the end of the file."""
        _append(self._fd, line, fsync=self.fsync)

    # file-like use (``print(..., file=records)`` is not supported: whole lines only)
    def write(self, text: str) -> None:
        self.append(text)

    def flush(self) -> None:
        pass  # every append is already on disk

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RecordFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def append_line(path: PathLike, line: str, *, fsync: bool = True) -> None:
    """Append one whole line to ``path`` (created if missing), dropping a partial last line first."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _drop_partial_line(fd)
        _append(fd, line, fsync=fsync)
    finally:
        os.close(fd)


def _drop_partial_line(fd: int) -> None:
    size = os.fstat(fd).st_size
    if not size or os.pread(fd, 1, size - 1) == b"\n":
        return
    end = size
    while end > 0:  # back to the last newline, a block at a time
        start = max(0, end - 65536)
        block = os.pread(fd, end - start, start)
        cut = block.rfind(b"\n")
        if cut >= 0:
            os.ftruncate(fd, start + cut + 1)
            return
        end = start
    os.ftruncate(fd, 0)


def _append(fd: int, line: str, *, fsync: bool) -> None:
    data = (line if line.endswith("\n") else line + "\n").encode("utf-8")
    size = os.lseek(fd, 0, os.SEEK_END)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if fsync:
            os.fsync(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)  # e.g. a full disk: take the partial line back
        raise

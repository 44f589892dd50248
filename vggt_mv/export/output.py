"""The output rule (DESIGN §12): every writer goes through here, so no run deletes what it did not write.

* ``check_output(target, kind, inputs, is_ours)`` validates a target *before* any expensive work:
  a target that does not exist, or an empty folder, may be written; an existing target only when
  ``is_ours`` recognises it as a previous vggt-mv output (its manifest says so). The current
  directory, an input, an ancestor of either, and an existing non-result are refused with a one-line
  ``OutputError`` saying why and what to do.
* ``output_dir`` / ``output_file`` write into a temp sibling and swap it in. Temp names carry the
  writer's pid and host (``.NAME.vggt-mv-PID-HOST-RAND.tmp`` / ``.old``), so the next write to the same
  target removes the leftovers of writers that died (pid gone on this host) and, when a crash left the
  target missing, first restores the complete previous result from its ``.old`` folder.
* Folders are swapped with ``renameat2(RENAME_EXCHANGE)`` where the kernel has it (the target always
  holds a complete result); elsewhere by two renames, whose gap the recovery above covers.

Fault injection for tests: ``VGGT_MV_TEST_DIE_AT=temp_written|between_renames|cleanup`` makes the
writer ``os._exit(86)`` at that point; ``VGGT_MV_TEST_NO_EXCHANGE=1`` forces the two-rename swap.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Literal

__all__ = ["OutputError", "check_output", "output_dir", "output_file", "output_path", "collect_leftovers",
           "is_result_dir", "is_train_run", "json_manifest_is", "manifest_files", "unlisted_entries"]

log = logging.getLogger("vggt_mv.export")

_TAG = "vggt-mv"
#: The ``format`` of a result folder's ``manifest.json`` (written by ``vggt_mv.export.bundle``).
RESULT_FORMAT = "vggt-mv-reconstruction"
_DIE_ENV = "VGGT_MV_TEST_DIE_AT"


class OutputError(ValueError):
    """An output target that must not be written (one line: the path, why, the fix)."""


# ----------------------------------------------------------------------------- what is ours

def json_manifest_is(path: Path, name: str, check: Callable[[dict], bool]) -> bool:
    """True when ``path/name`` is a JSON object that ``check`` accepts."""
    try:
        with open(path / name, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and bool(check(data))


def is_result_dir(path: Path) -> bool:
    """A folder written by ``Reconstruction.save`` (``manifest.json`` of format vggt-mv-reconstruction)."""
    return path.is_dir() and json_manifest_is(path, "manifest.json", lambda m: m.get("format") == RESULT_FORMAT)


def manifest_files(path: Path, name: str = "manifest.json") -> list[str] | None:
    """The files a previous output listed in ``path/name`` (``"files"``: relative paths, a trailing
    ``/`` covering a whole folder), or None when it lists none."""
    try:
        with open(path / name, encoding="utf-8") as handle:
            files = json.load(handle).get("files")
    except (OSError, ValueError, AttributeError):
        return None
    return [str(f) for f in files] if isinstance(files, list) else None


def unlisted_entries(path: Path, listed: Iterable[str]) -> list[str]:
    """Entries under the folder ``path`` that ``listed`` does not cover (sorted relative paths; a
    folder that holds nothing listed is reported once, as ``name/``)."""
    files = {f for f in listed if not f.endswith("/")}
    folders = {f.rstrip("/") for f in listed if f.endswith("/")}
    needed = {str(Path(f).parent) for f in files} | folders  # ... and their ancestors:
    needed |= {str(parent) for f in needed for parent in Path(f).parents}
    found: list[str] = []
    for root, dirs, names in os.walk(path):
        rel = Path(root).relative_to(path)
        keep = []
        for d in sorted(dirs):
            sub = (rel / d).as_posix()
            if sub in folders:
                continue  # a listed folder: everything in it was written with it
            if sub in needed:
                keep.append(d)
            else:
                found.append(sub + "/")
        dirs[:] = keep
        found += [(rel / n).as_posix() for n in names if (rel / n).as_posix() not in files]
    return sorted(found)


def is_train_run(path: Path) -> bool:
    """A folder written by ``vggt-mv train``: its ``log.jsonl`` starts with the run record (or, from
    older versions, its ``train_log.json``)."""
    if not path.is_dir():
        return False
    log = path / "log.jsonl"
    if log.is_file() and not log.is_symlink():
        try:
            with open(log, encoding="utf-8") as f:
                first = json.loads(f.readline())
        except (OSError, ValueError):
            return False
        return isinstance(first, dict) and first.get("kind") == "run" and "train_config" in first
    return json_manifest_is(path, "train_log.json", lambda m: "train_config" in m and "model_config" in m)


# ----------------------------------------------------------------------------- checking

def _resolve(p: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(p)))).resolve()


def _is_same_or_ancestor(a: Path, b: Path) -> bool:
    """``a`` is ``b`` or one of its ancestors."""
    return a == b or a in b.parents


def _nearest_existing(p: Path) -> Path:
    while not p.exists():
        p = p.parent
    return p


def check_output(
    target: str | os.PathLike,
    *,
    kind: Literal["dir", "file"],
    inputs: Iterable[str | os.PathLike | None] = (),
    is_ours: Callable[[Path], bool] | None = None,
    what: str = "--out",
    written: Callable[[Path], list[str] | None] | None = None,
) -> Path:
    """Validate ``target`` against the output rule; returns its absolute path or raises ``OutputError``.

    Checks, in order: not the current directory / an input / an ancestor of either; an existing
    target is an empty folder (``kind="dir"``) or recognised by ``is_ours`` and, with ``written``
    (the files that previous output lists, e.g. :func:`manifest_files`), holds nothing else; the
    place it would be created in is a writable folder (probed with a temp entry that is removed again).
    """
    path = Path(os.path.abspath(os.path.expanduser(os.fspath(target))))
    real = _resolve(path)
    cwd = _resolve(os.getcwd())
    if _is_same_or_ancestor(real, cwd):
        where = "the current directory" if real == cwd else "an ancestor of the current directory"
        raise OutputError(f"{what} {target} is {where}; write results into a new folder, e.g. {what} out/")
    for item in inputs:
        if item is None:
            continue
        inp = _resolve(item)
        if _is_same_or_ancestor(real, inp):
            rel = "an input" if real == inp else f"a folder holding the input {item}"
            raise OutputError(f"{what} {target} is {rel}; choose an output folder outside the inputs")
    if path.exists() or path.is_symlink():
        ours = bool(is_ours and is_ours(path))
        if kind == "dir":
            if not path.is_dir():
                raise OutputError(f"{what} {target} exists and is not a folder; choose a new folder name")
            if not ours and any(path.iterdir()):
                kind_of = ("a vggt-mv output of another kind than this command writes"
                           if is_result_dir(path) or is_train_run(path) else "a non-empty folder that is not a vggt-mv result")
                raise OutputError(f"{what} {target} is {kind_of}; choose a new or empty folder "
                                  "(nothing is deleted for you)")
            listed = written(path) if ours and written is not None else None
            extra = [] if listed is None else unlisted_entries(path, listed)
            if extra:
                names = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
                raise OutputError(f"{what} {target} is a vggt-mv output that also holds what vggt-mv did not write "
                                  f"there ({names}); move that out or choose another {what} (nothing is deleted "
                                  "for you)")
        else:
            if path.is_dir():
                raise OutputError(f"{what} {target} is a folder; give a file name")
            if not ours:
                raise OutputError(f"{what} {target} exists and was not written by vggt-mv; "
                                  "choose a new file name (nothing is overwritten for you)")
    parent = _nearest_existing(path.parent)
    if not parent.is_dir():
        raise OutputError(f"{what} {target}: {parent} is not a folder; choose another output path")
    try:
        probe = Path(_mkdtemp(parent, ".vggt-mv-probe"))
        probe.rmdir()
    except OSError as e:
        raise OutputError(f"{what} {target}: cannot write in {parent} ({e.strerror or e}); "
                          "choose a writable output location") from None
    return path


# ----------------------------------------------------------------------------- temp names, leftovers

def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _temp_name(target: Path, suffix: str, token: str | None = None, keep_ext: bool = False) -> str:
    token = token or secrets.token_hex(4)
    ext = target.suffix if keep_ext else ""  # writers that pick the format by extension (video)
    return f".{target.name}.{_TAG}-{os.getpid()}-{_host_tag()}-{token}.{suffix}{ext}"


def _mkdtemp(parent: Path, name: str) -> str:
    path = parent / f"{name}.{secrets.token_hex(4)}"
    os.mkdir(path, 0o755)
    return str(path)


def _leftover_re(target: Path) -> re.Pattern:
    return re.compile(r"^\." + re.escape(target.name) + r"\." + _TAG + r"-(\d+)-([0-9a-f]{8})-([0-9a-f]+)\.(tmp|old)(?:\.\w+)?$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def collect_leftovers(target: str | os.PathLike, is_complete: Callable[[Path], bool] | None = None) -> list[Path]:
    """Remove temp/old entries of dead writers of ``target`` (this host only); returns what was removed.

    If ``target`` is missing and a dead writer's ``.old`` entry holds a complete previous output
    (``is_complete``), it is renamed back to ``target`` first.
    """
    target = Path(os.path.abspath(os.fspath(target)))
    if not target.parent.is_dir():
        return []
    pattern, host = _leftover_re(target), _host_tag()
    dead: list[tuple[Path, str]] = []
    for entry in target.parent.iterdir():
        m = pattern.match(entry.name)
        if not m:
            continue
        pid, entry_host, _, kind = int(m.group(1)), m.group(2), m.group(3), m.group(4)
        if entry_host != host:
            log.warning("leaving %s: written by a process on another host", entry)
            continue
        if pid == os.getpid() or _pid_alive(pid):
            continue
        dead.append((entry, kind))
    if not (target.exists() or target.is_symlink()):
        for entry, kind in dead:
            if kind == "old" and (is_complete is None or is_complete(entry)):
                os.rename(entry, target)
                log.warning("restored %s from %s (a previous write was interrupted mid-swap)", target, entry.name)
                dead.remove((entry, kind))
                break
    removed = []
    for entry, _ in dead:
        _remove(entry)
        removed.append(entry)
    if removed:
        log.warning("removed leftovers of interrupted writes to %s: %s", target,
                    ", ".join(p.name for p in removed))
    return removed


# ----------------------------------------------------------------------------- swapping

def _maybe_die(point: str, cleanup_partial: Path | None = None) -> None:
    if os.environ.get(_DIE_ENV) != point:
        return
    if cleanup_partial is not None and cleanup_partial.is_dir():  # die half-way through a removal
        entries = sorted(cleanup_partial.rglob("*"), key=lambda p: len(p.parts), reverse=True)
        for p in entries[: max(1, len(entries) // 2)]:
            _remove(p)
    os._exit(86)


def _libc_renameat2():
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _libc_renameat2()
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2``); False when unsupported here."""
    if _RENAMEAT2 is None or os.environ.get("VGGT_MV_TEST_NO_EXCHANGE"):
        return False
    rc = _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(tmp: Path, target: Path, token: str) -> None:
    """Put the complete ``tmp`` at ``target``; a previous ``target`` is removed afterwards."""
    old = target.parent / _temp_name(target, "old", token)
    if target.exists() or target.is_symlink():
        if _exchange(tmp, target):
            os.rename(tmp, old)  # tmp now holds the previous result
            _maybe_die("between_renames")
        else:
            os.rename(target, old)
            _maybe_die("between_renames")
            os.rename(tmp, target)
        _maybe_die("cleanup", cleanup_partial=old)
        _remove(old)
    else:
        os.rename(tmp, target)


def replace_dir(tmp: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put the complete folder ``tmp`` at ``target`` atomically (a previous ``target`` is removed
    afterwards); for folders several processes wrote together (sharded checkpoints)."""
    _swap_in(Path(tmp), Path(target), secrets.token_hex(4))


@contextlib.contextmanager
def output_dir(
    target: str | os.PathLike,
    *,
    inputs: Iterable[str | os.PathLike | None] = (),
    is_ours: Callable[[Path], bool] = is_result_dir,
    what: str = "--out",
    written: Callable[[Path], list[str] | None] | None = manifest_files,
) -> Iterator[Path]:
    """Yield a temp folder beside ``target``; on success it replaces ``target`` as a whole.

    ``target`` is checked with :func:`check_output` first (``written``: what a previous output
    there lists, so nothing else in it is replaced) and leftovers of dead writers are collected.
    On an exception inside the block the temp folder is removed and ``target`` is untouched.
    """
    path = check_output(target, kind="dir", inputs=inputs, is_ours=is_ours, what=what, written=written)
    path.parent.mkdir(parents=True, exist_ok=True)
    collect_leftovers(path, is_ours)
    token = secrets.token_hex(4)
    tmp = path.parent / _temp_name(path, "tmp", token)
    os.mkdir(tmp, 0o755)
    try:
        yield tmp
        _maybe_die("temp_written")
        _swap_in(tmp, path, token)
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def output_path(
    target: str | os.PathLike,
    *,
    inputs: Iterable[str | os.PathLike | None] = (),
    is_ours: Callable[[Path], bool] | None = None,
    what: str = "--out",
    check: bool = True,
    keep_ext: bool = False,
) -> Iterator[Path]:
    """Yield a temp file path beside ``target`` for a writer that opens files itself; on success it
    is fsynced and renamed onto ``target`` (0644). With ``check`` the target is validated by
    :func:`check_output` (an existing file is replaced only when ``is_ours`` says vggt-mv wrote it).
    On an exception the temp file is removed and ``target`` is untouched. ``keep_ext`` ends the
    temp name with the target's extension (for writers that choose the format by it).
    """
    path = Path(os.path.abspath(os.fspath(target)))
    if check:
        check_output(path, kind="file", inputs=inputs, is_ours=is_ours, what=what)
    path.parent.mkdir(parents=True, exist_ok=True)
    if check:
        collect_leftovers(path)
    tmp = path.parent / _temp_name(path, "tmp", keep_ext=keep_ext)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o644)
        _maybe_die("temp_written")
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def output_file(
    target: str | os.PathLike,
    mode: str = "wb",
    *,
    inputs: Iterable[str | os.PathLike | None] = (),
    is_ours: Callable[[Path], bool] | None = None,
    what: str = "--out",
    check: bool = True,
) -> Iterator[IO]:
    """:func:`output_path` with the temp file opened in ``mode`` (``"wb"`` / ``"w"``)."""
    with output_path(target, inputs=inputs, is_ours=is_ours, what=what, check=check) as tmp:
        encoding = None if "b" in mode else "utf-8"
        with open(tmp, mode.replace("w", "x"), encoding=encoding) as handle:
            yield handle

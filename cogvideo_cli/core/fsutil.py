"""Atomic outputs: build under a temporary name beside the target, rename when complete.

Every command that writes uses these, so an interrupted or failed run leaves no target and
no half-written file, and an existing target is never replaced without ``force``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cogvideo_cli.core.errors import UsageError

TEMP_MARK = ".cogvx-tmp-"


def _overlap(target: Path, other: Path) -> bool:
    """Whether one of the two paths is the other or lies inside it."""
    return target == other or target in other.parents or other in target.parents


def check_target(target: Path, force: bool, what: str = "output",
                 protect: tuple[Path, ...] = ()) -> None:
    """Refuse to touch an existing target unless ``force`` is given.

    Even with ``force``, a target is refused when it holds or lies inside one of the
    ``protect`` paths (the inputs of the same command), or when replacing it would delete
    the working folder, the home folder or the file-system root.
    """
    resolved = Path(target).resolve()
    for path in protect:
        if _overlap(resolved, Path(path).resolve()):
            raise UsageError(
                f"the {what} {target} overlaps the input {path}; writing it would destroy "
                "or nest inside the input", fix="choose a target outside the input")
    if not resolved.exists():
        return
    if not force:
        raise UsageError(
            f"the {what} {target} already exists",
            fix="choose another path, or pass --force to replace it",
        )
    precious = {Path.cwd().resolve(), Path.home().resolve(), Path(resolved.anchor)}
    if any(p == resolved or resolved in p.parents for p in precious):
        raise UsageError(
            f"--force would replace {resolved}, which holds the working folder, the home "
            "folder or the root", fix="choose a dedicated target folder")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _public(path: Path, directory: bool) -> None:
    """Give a temporary file or folder the permissions a plain create would have.

    mkdtemp and mkstemp create 0700 / 0600 entries; outputs must not stay private once
    they are renamed into place.
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_dir(target: Path, force: bool = False, what: str = "output folder",
               protect: tuple[Path, ...] = ()) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``target``; on success it becomes ``target``.

    On any exception (Ctrl-C included) the temporary folder is removed and ``target`` is
    left as it was. With ``force`` an existing target is replaced only after the new one
    is complete.
    """
    target = Path(target).absolute()
    check_target(target, force, what, protect)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TEMP_MARK + target.name + "-", dir=target.parent))
    _public(tmp, directory=True)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    old = None
    if target.exists():
        old = target.with_name(f"{TEMP_MARK}old-{target.name}-{os.getpid()}")
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        _remove(tmp)
        raise
    if old is not None:
        _remove(old)


@contextlib.contextmanager
def atomic_file(target: Path, force: bool = True, mode: str = "w",
                encoding: str | None = "utf-8") -> Iterator:
    """Open a temporary file beside ``target``; it replaces ``target`` once closed cleanly."""
    target = Path(target)
    check_target(target, force, "file")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=TEMP_MARK + target.name + "-", dir=target.parent)
    tmp = Path(name)
    _public(tmp, directory=False)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_text_atomic(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` through a temporary file (replacing it)."""
    with atomic_file(target) as handle:
        handle.write(text)


def free_bytes(path: Path) -> int:
    """Free bytes on the file system holding ``path`` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free

"""Writing the user's output files: checked before a run, written whole or not at all, normal permissions.

A file is written under a temporary name next to its destination and renamed when complete, so a full disk or
a failed encoder leaves no partial file behind; the finished file gets 0666 less the umask (0644 usually), as
any file the user writes (safetensors' writer makes 0600 files).
"""

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import VaceError


def check_writable(path: str | Path, extensions: tuple[str, ...] | None = None) -> Path:
    """Refuses, before any work, an output path that cannot be written: a wrong extension, a folder in the
    way, or a folder that cannot be created or written."""
    path = Path(path)
    if extensions is not None and path.suffix.lower() not in extensions:
        raise VaceError(f"cannot write {path.name!r}: choose an extension among {', '.join(extensions)}")
    if path.is_dir() and extensions is not None:
        raise VaceError(f"cannot write {path}: it is a folder; give a file name")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VaceError(f"cannot write {path}: its folder cannot be created ({e.strerror or e})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise VaceError(f"cannot write {path}: no permission to write in {folder}")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _normal_permissions(path: Path) -> None:
    mask = _umask()
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for p in paths:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path (same folder and extension) to write; on success it becomes `path`, on any
    failure it is removed; an OSError (disk full, permissions) becomes a one-line VaceError."""
    path = Path(path)
    check_writable(path)
    temp = path.with_name(f".{path.stem}.partial{path.suffix}")
    _remove(temp)
    try:
        yield temp
        _normal_permissions(temp)
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(temp, path)
    except OSError as e:
        _remove(temp)
        raise VaceError(f"could not write {path}: {e.strerror or e}. Nothing was written.") from None
    except BaseException:
        _remove(temp)
        raise


def save_safetensors(tensors: dict, path: Path, metadata: dict | None = None) -> None:
    """safetensors' save_file, its I/O failures (a full disk: "I/O error: No space left on device") as the OSError
    they are, which atomic_output turns into one line."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as e:
        raise OSError(str(e).removeprefix("Error while serializing: ")) from None

"""Files the commands write: output paths checked before any work starts, then written atomically.

A command checks each of its outputs first (`check_output_file`, `check_output_folder`): the path is of the
right kind (a file or a folder, with the right suffix), nothing in the way is a file where a folder must be,
and the nearest existing folder takes a new file. So a bad `--out` costs a second, not an hour of sampling.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from sparseguidance.errors import ConfigError

# What np.load raises for a file that is not a readable npz: missing, truncated, damaged, holding pickles.
NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)` on a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; give them the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_file(path: str | Path, suffixes: Sequence[str], option: str = "--out") -> Path:
    """Raise ConfigError unless `path` can be written as a file with one of `suffixes` (e.g. `.json`)."""
    path = Path(path)
    if path.suffix not in suffixes:
        raise ConfigError(f"{option} {path}: expected a {' or '.join(suffixes)} file")
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file name such as {path / ('NAME' + suffixes[0])}")
    if path.exists() and not path.is_file():
        raise ConfigError(f"{option} {path} exists and is not a regular file")
    check_writable_parent(path, option)
    return path


def check_output_folder(path: str | Path, option: str = "--out") -> Path:
    """Raise ConfigError unless `path` is a folder, or can be made one, in which files can be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} is a file, not a folder")
    check_writable_parent(path / "x", option)
    return path


def check_writable_parent(path: Path, option: str) -> None:
    """Raise ConfigError unless the nearest existing folder above `path` is a folder that takes new files."""
    existing = next(p for p in path.absolute().parents if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{option} {path}: {existing} is a file, not a folder")
    try:  # the one reliable test (permissions, read-only mounts, /proc): make a file there, then remove it
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".sparseguidance-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"{option} {path}: cannot write in {existing} ({e.strerror})") from None

"""Write-then-rename helpers (nothing is ever half-written, nothing a user made is overwritten unless
asked), and md5 checks of the files already on disk."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hybridlearn.core.errors import ConfigError, DataError


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temp path in the same folder as `path`; rename it onto `path` on success.

    The temp file keeps the suffix of `path` so writers that pick a format from the extension
    (PyAV, PIL, matplotlib) still work. On any exception the temp file is removed.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} already exists; choose another output path or set overwrite=true")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as e:
        raise ConfigError(f"cannot write {path} ({e.strerror or e}); choose an output in a writable folder") from None
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the user's usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def save_gif(frames: list, path: str | os.PathLike, duration_ms: int | list[int], overwrite: bool = True) -> Path:
    """Save PIL images as a looping GIF (one duration, or one per frame), atomically."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    return Path(path)


def md5sum(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_present(folder: str | Path, files: dict[str, str | None], what: str = "data") -> None:
    """Before a run starts: every file of `files` ({name: md5 or None}) that is in `folder` matches its
    md5 (a missing one is fetched later by ensure_files); a corrupt one is one line naming it."""
    for name, md5 in files.items():
        path = Path(folder).expanduser() / name
        if md5 is not None and path.is_file() and (got := md5sum(path)) != md5:
            raise DataError(
                f"{path}: md5 {got} does not match the expected {md5} ({what}: corrupt or truncated); "
                "delete it to download it again, or point DATA_DIR at a good copy"
            )

"""md5-checked data files: use what is in DATA_DIR, download what is missing, never keep a bad file."""

from __future__ import annotations

import hashlib
import logging
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping, Sequence

from hybridlearn.core.errors import DataError
from hybridlearn.core.io import atomic_output

log = logging.getLogger(__name__)

DATA_HINT = "set DATA_DIR to a folder that holds them (e.g. DATA_DIR=../shared/data)"


def md5sum(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _download(url: str, dest: Path, md5: str | None, timeout: float) -> None:
    """Fetch `url` to `dest` through a temp file; only a complete file with the right md5 lands."""
    with atomic_output(dest) as tmp:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
            shutil.copyfileobj(resp, out)
        got = md5sum(tmp)
        if md5 is not None and got != md5:
            raise DataError(f"{url}: md5 {got} != expected {md5} (truncated or wrong file); not saved")


def ensure_files(
    folder: str | Path,
    files: Mapping[str, str | None],
    urls: Mapping[str, Sequence[str]] | None = None,
    what: str = "data",
    timeout: float = 30.0,
) -> dict[str, Path]:
    """Return {name: path} for every file in `files` ({name: md5 or None}) inside `folder`.

    Present files must match their md5 (a mismatch is an error: we never delete what a user put
    there). Missing files are downloaded from `urls[name]` (tried in order). If none answers, one
    DataError names the folder, the missing files and DATA_DIR.
    """
    folder = Path(folder).expanduser()
    urls = urls or {}
    paths, missing, errors = {}, [], []
    for name, md5 in files.items():
        path = folder / name
        paths[name] = path
        if path.exists():
            if md5 is not None and (got := md5sum(path)) != md5:
                raise DataError(
                    f"{path}: md5 {got} does not match the expected {md5} (corrupt or truncated); "
                    f"delete it to download it again, or {DATA_HINT}"
                )
            continue
        for url in urls.get(name, ()):
            try:
                log.info("downloading %s -> %s", url, path)
                _download(url, path, md5, timeout)
                break
            except (urllib.error.URLError, OSError, DataError) as e:
                errors.append(f"{url}: {e}")
                log.warning("download failed: %s: %s", url, e)
        if not path.exists():
            missing.append(name)
    if missing:
        tried = f" (all {len(errors)} download attempts failed, first: {errors[0]})" if errors else ""
        raise DataError(
            f"{what} not found in {folder}: missing {', '.join(missing)}{tried}; {DATA_HINT}"
        )
    return paths

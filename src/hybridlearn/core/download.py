"""md5-checked data files: use what is in DATA_DIR, download what is missing, never keep a bad file."""

from __future__ import annotations

import http.client
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from hybridlearn.core.errors import DataError
from hybridlearn.core.io import atomic_output, md5sum

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0  # seconds per attempt to connect or to get the next bytes
DATA_HINT = "set DATA_DIR to a folder that holds them (e.g. DATA_DIR=../shared/data)"


def download_deadline() -> float:
    """Seconds all downloads of one call may take together ($HYBRIDLEARN_DOWNLOAD_TIMEOUT, default 60)."""
    raw = os.environ.get("HYBRIDLEARN_DOWNLOAD_TIMEOUT", "60")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise DataError(f"HYBRIDLEARN_DOWNLOAD_TIMEOUT must be a positive number of seconds (got {raw!r})")
    return value


def _download(url: str, dest: Path, md5: str | None, deadline: float) -> None:
    """Fetch `url` to `dest` through a temp file before `deadline` (time.monotonic()); only a complete
    file with the right md5 lands. A server that accepts but never answers costs at most
    CONNECT_TIMEOUT per attempt, and no attempt runs past the deadline."""
    with atomic_output(dest) as tmp:
        timeout = max(0.1, min(CONNECT_TIMEOUT, deadline - time.monotonic()))
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
            size = 0
            while block := resp.read(1 << 16):
                out.write(block)
                size += len(block)
                if time.monotonic() > deadline:
                    raise DataError(f"{url}: download deadline passed; not saved")
            # urllib ends quietly when the server closes early: compare with the announced length
            length = resp.headers.get("Content-Length")
            if length is not None and length.isdigit() and size != int(length):
                raise DataError(f"{url}: got {size} of {length} bytes (connection closed early); not saved")
        got = md5sum(tmp)
        if md5 is not None and got != md5:
            raise DataError(f"{url}: md5 {got} != expected {md5} (truncated or wrong file); not saved")


def ensure_files(
    folder: str | Path,
    files: Mapping[str, str | None],
    urls: Mapping[str, Sequence[str]] | None = None,
    what: str = "data",
    timeout: float | None = None,
) -> dict[str, Path]:
    """Return {name: path} for every file in `files` ({name: md5 or None}) inside `folder`.

    Present files must match their md5 (a mismatch is an error: we never delete what a user put
    there). Missing files are downloaded from `urls[name]` (tried in order). If none answers, one
    DataError names the folder, the missing files, the URLs tried and DATA_DIR. All downloads of
    the call share one deadline: `timeout` seconds, default `download_deadline()`.
    """
    folder = Path(folder).expanduser()
    created = not folder.exists()  # made by a download below: removed again if nothing lands in it
    deadline = time.monotonic() + (timeout if timeout is not None else download_deadline())
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
            if time.monotonic() >= deadline:
                errors.append(f"{url}: not tried, download deadline passed")
                continue
            try:
                log.info("downloading %s -> %s", url, path)
                _download(url, path, md5, deadline)
                break
            except (urllib.error.URLError, OSError, DataError) as e:
                errors.append(f"{url}: {e}")
                log.warning("download failed: %s: %s", url, e)
        if not path.exists():
            missing.append(name)
    if missing:
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        tried = f" (downloads failed: {'; '.join(errors)})" if errors else ""
        raise DataError(f"{what} not found in {folder}: missing {', '.join(missing)}{tried}; {DATA_HINT}")
    return paths


def fetch(url: str, dest: str | Path, md5: str | None = None, timeout: float | None = None) -> Path:
    """Download one URL to `dest` (temp file + rename; nothing is left on failure). A failure is one
    DataError naming the URL and the file; `timeout`: seconds in all (default `download_deadline()`)."""
    dest = Path(dest).expanduser()
    deadline = time.monotonic() + (timeout if timeout is not None else download_deadline())
    try:
        _download(url, dest, md5, deadline)
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException, DataError) as e:
        reason = e if isinstance(e, urllib.error.HTTPError) else getattr(e, "reason", None) or e
        raise DataError(
            f"could not download {url} to {dest} ({type(e).__name__}: {reason}); nothing was saved"
        ) from None
    return dest

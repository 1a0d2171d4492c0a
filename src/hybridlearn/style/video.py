"""Stream the frames of a video (or one image) with PyAV, in batches, for `trainer.predict`.

Memory is bounded whatever the length: frames are decoded on the fly into one batch buffer at a
time (an IterableDataset), by a thread at most `prefetch` batches ahead; nothing keeps a list of
all frames. A batch is a dict
    frames  uint8 [B, H, W, 3] RGB (already resized to the output size)
    pts     int64 [B] presentation timestamps in the source stream's time base
    index   int64 [B] frame numbers
A file that stops decoding part way (truncated download, corrupt packet) yields what decoded,
with a warning; the writer then finishes the output properly.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from hybridlearn.core.errors import DataError
from hybridlearn.style.pipeline import prefetch
from hybridlearn.style.sources import VIDEO_HINT, resolve_input

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


@dataclass
class VideoInfo:
    path: Path
    is_image: bool
    width: int  # source size
    height: int
    out_width: int  # size of the frames yielded (and written)
    out_height: int
    fps: Fraction  # average frame rate (1 for an image)
    time_base: Fraction  # of the source video stream
    frames: int  # frame count from the container (0 when unknown)
    duration_s: float  # of the video stream (0 when unknown)
    start_pts: int
    has_audio: bool
    audio_codec: str | None


def output_size(w: int, h: int, max_side: int | None, size) -> tuple[int, int]:
    """(width, height) of the stylized frames: `size` [H, W] if given, else the source size shrunk
    so that its longer side is at most `max_side` (even numbers, aspect ratio kept)."""
    if size is not None:
        return int(size[1]), int(size[0])
    if max_side is not None:
        if max(w, h) > max_side:
            s = max_side / max(w, h)
            return max(2, 2 * round(w * s / 2)), max(2, 2 * round(h * s / 2))
    return w, h


def _open(path: Path):
    import av

    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except av.FFmpegError as e:
        raise DataError(f"{path} is not a readable video ({e.strerror or type(e).__name__}); {VIDEO_HINT}") from None
    except OSError as e:
        raise DataError(f"{path} cannot be opened ({e}); {VIDEO_HINT}") from None


def probe(path: str | Path, max_side: int | None = None, size=None) -> VideoInfo:
    """Read the stream parameters; DataError for non-videos and files without a video stream."""
    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        from PIL import Image

        try:
            with Image.open(path) as im:
                w, h = im.size
        except Exception as e:  # noqa: BLE001
            raise DataError(f"{path} is not a readable image ({e}); give a PNG or JPEG file") from None
        ow, oh = output_size(w, h, max_side, size)
        return VideoInfo(path, True, w, h, ow, oh, Fraction(1), Fraction(1), 1, 0.0, 0, False, None)
    with _open(path) as c:
        if not c.streams.video:
            raise DataError(
                f"{path} has no video stream (only {', '.join(s.type for s in c.streams) or 'nothing'}); {VIDEO_HINT}"
            )
        v = c.streams.video[0]
        w, h = v.codec_context.width, v.codec_context.height
        if not w or not h:
            raise DataError(f"{path}: the video stream has no frame size; the file is damaged, re-export it")
        fps = v.average_rate or v.guessed_rate or v.base_rate or Fraction(25)
        tb = v.time_base or Fraction(1, 90000)
        dur = float(v.duration * tb) if v.duration else (c.duration / 1e6 if c.duration else 0.0)
        audio = c.streams.audio[0] if c.streams.audio else None
        ow, oh = output_size(w, h, max_side, size)
        return VideoInfo(
            path,
            False,
            w,
            h,
            ow,
            oh,
            Fraction(fps),
            Fraction(tb),
            int(v.frames or 0),
            dur,
            int(v.start_time or 0),
            audio is not None,
            audio.codec_context.name if audio else None,
        )


class VideoFrameStream(IterableDataset):
    """Yields batches (dicts, see module doc) of consecutive decoded frames; with prefetch > 0 a
    thread decodes (and resizes) up to that many batches ahead of the model."""

    def __init__(
        self,
        info: VideoInfo,
        batch_size: int = 4,
        max_frames: int | None = None,
        interpolation: str = "AREA",
        prefetch: int = 0,
        decode_threads: int = 1,
    ):
        self.info, self.batch_size, self.max_frames, self.interpolation = info, batch_size, max_frames, interpolation
        self.prefetch, self.decode_threads = int(prefetch), int(decode_threads)
        self.decoded = 0
        self.truncated = False
        # warnings wait here while a progress bar is drawn (the writer prints them after closing it)
        self.defer_warnings = False
        self.pending_warnings: list[str] = []

    def _warn(self, msg: str) -> None:
        self.pending_warnings.append(msg)  # (maybe in the decode thread) shown by __iter__ or the writer

    def _frames(self):
        """(pts, uint8 [H, W, 3] frame) of the input, at the output size."""
        if self.info.is_image:
            yield 0, self._image()
            return
        last_pts = yield from self._decode()
        if not self.truncated and self.max_frames is None:
            self._check_complete(last_pts)

    def _image(self) -> np.ndarray:
        info = self.info
        img = load_rgb(info.path, "input")
        if (img.shape[1], img.shape[0]) != (info.out_width, info.out_height):
            from PIL import Image

            img = np.asarray(Image.fromarray(img).resize((info.out_width, info.out_height), Image.LANCZOS))
        return img

    def _decode(self):
        """Yield every frame that decodes; return the last pts. A decode error ends the stream with a
        warning: what decoded is still stylized."""
        import av

        info = self.info
        resize = (info.out_width, info.out_height) != (info.width, info.height)
        step = round(1 / (info.fps * info.time_base)) if info.fps and info.time_base else 1
        last_pts = None
        with _open(info.path) as c:
            stream = c.streams.video[0]
            # one thread by default: FFmpeg's frame threads would take more CPU from the model
            stream.codec_context.thread_count = self.decode_threads  # (0: FFmpeg's choice)
            if self.decode_threads != 1:
                stream.thread_type = "AUTO"
            try:
                for frame in c.decode(stream):
                    if frame.pts is not None:
                        pts = int(frame.pts)
                    else:  # streams without timestamps: count frames
                        pts = info.start_pts if last_pts is None else last_pts + step
                    if last_pts is not None and pts <= last_pts:
                        pts = last_pts + 1  # keep timestamps strictly increasing for the muxer
                    last_pts = pts
                    if resize:
                        arr = frame.to_ndarray(
                            width=info.out_width,
                            height=info.out_height,
                            format="rgb24",
                            interpolation=self.interpolation,
                        )
                    else:
                        arr = frame.to_ndarray(format="rgb24")
                    yield pts, arr
            except (av.FFmpegError, EOFError) as e:
                self.truncated = True
                self._warn(
                    f"{info.path}: decoding stopped after {self.decoded} frames ({e}); "
                    "the file looks truncated or damaged, stylizing what decoded"
                )
        return last_pts

    def _check_complete(self, last_pts: int | None) -> None:
        """Fewer frames (or seconds) decoded than the container announced, without an error: the
        file was cut short; say so as for a damaged one."""
        info = self.info
        if info.frames and self.decoded < info.frames:
            missing = f"decoded {self.decoded} of {info.frames} frames"
        elif not info.frames and info.duration_s and last_pts is not None:
            end = float((last_pts - info.start_pts) * info.time_base) + 1 / float(info.fps)
            tol = max(0.25, 3 / float(info.fps))
            missing = f"decoded {end:.2f} s of {info.duration_s:.2f} s" if end < info.duration_s - tol else None
        else:
            missing = None
        if missing:
            self.truncated = True
            self._warn(f"{info.path}: {missing}; the file looks truncated, stylizing what decoded")

    def __iter__(self):
        self._active = self._iterate()
        return self._active

    def close(self) -> None:
        """Stop the decode thread of an interrupted iteration now (not when it is garbage collected)."""
        active, self._active = getattr(self, "_active", None), None
        if active is not None:
            active.close()

    def __getstate__(self):  # (a worker process gets a copy without the running iterator)
        return {**self.__dict__, "_active": None}

    def _iterate(self):
        self.pending_warnings = []
        yield from prefetch(self._batches, self.prefetch, "decode")
        if not self.defer_warnings:
            for msg in self.pending_warnings:
                warnings.warn(msg, stacklevel=2)
            self.pending_warnings = []

    def _batches(self):
        """Batches of `batch_size` frames; each frame is copied once, into its batch's own array."""
        b, n = self.batch_size, 0
        self.decoded = 0
        for p, arr in self._frames():
            if self.max_frames is not None and self.decoded >= self.max_frames:
                break
            if n == 0:  # a fresh array per batch: the one handed out is never written again
                buf = np.empty((b, self.info.out_height, self.info.out_width, 3), np.uint8)
                pts = np.empty(b, np.int64)
            buf[n], pts[n] = arr, p
            n += 1
            self.decoded += 1
            if n == b:
                yield self._batch(buf, pts, n)
                n = 0
        if n:
            yield self._batch(buf, pts, n)

    def _batch(self, buf, pts, n):
        start = self.decoded - n
        return {
            "frames": torch.from_numpy(buf[:n]),
            "pts": torch.from_numpy(pts[:n]),
            "index": torch.arange(start, start + n),
        }


class VideoFramesDataModule(L.LightningDataModule):
    """Predict-only data module over one video (or image) file.

    path: the input (as given, or relative to DATA_DIR/video; the demo clip is downloaded when
    missing, from `mirrors` first, see style/sources.py). size: [H, W] to force a frame size;
    max_side: shrink so the longer side is at most this (aspect kept); neither: source size.
    Every argument is a setting of VideoDataConfig (style/conf.py: default, range, help).
    """

    def __init__(
        self,
        path: str | None,
        data_dir: str | None,
        batch_size: int,
        max_side: int | None,
        size: list[int] | None,
        max_frames: int | None,
        num_workers: int,
        interpolation: str,
        mirrors: list | str | None,
        download_timeout: float | None,
        prefetch: int,
        decode_threads: int,
    ):
        super().__init__()
        self.decode_threads = int(decode_threads)
        self.path, self.data_dir = path, data_dir
        self.batch_size, self.max_side, self.size = int(batch_size), max_side, size
        self.max_frames, self.num_workers, self.interpolation = max_frames, num_workers, interpolation
        self.mirrors, self.download_timeout, self.prefetch = mirrors, download_timeout, int(prefetch)
        self.info: VideoInfo | None = None
        self.dataset: VideoFrameStream | None = None

    def prepare(self) -> VideoInfo:
        if self.info is None:
            src = resolve_input(self.path, self.data_dir, self.mirrors, self.download_timeout)
            self.info = probe(src, self.max_side, self.size)
            if self.info.out_width % 2 or self.info.out_height % 2:
                log.info("%s: odd frame size %dx%d", src, self.info.out_width, self.info.out_height)
        return self.info

    def setup(self, stage: str | None = None) -> None:
        info = self.prepare()
        self.dataset = VideoFrameStream(
            info, self.batch_size, self.max_frames, self.interpolation, self.prefetch, self.decode_threads
        )

    def predict_dataloader(self) -> DataLoader:
        if self.dataset is None:
            self.setup("predict")
        return DataLoader(self.dataset, batch_size=None, num_workers=self.num_workers, persistent_workers=False)

    def teardown(self, stage: str) -> None:
        # Lightning's fetcher may stop before the stream's end (limit_predict_batches) and keeps the
        # iterator in reference cycles: stop and join the decode thread now, not at some later gc
        if self.dataset is not None:
            self.dataset.close()

    @property
    def expected_frames(self) -> int | None:
        info = self.prepare()
        n = info.frames or (math.ceil(info.duration_s * info.fps) if info.duration_s else None)
        if n and self.max_frames:
            n = min(n, int(self.max_frames))
        return n


def load_rgb(path: str | Path, what: str = "style") -> np.ndarray:
    """Any PIL-readable image -> uint8 [H, W, 3] RGB. Transparency (RGBA, LA, palette with
    transparency) is composited over white; grey, palette, CMYK and 16-bit images are converted."""
    from PIL import Image, ImageOps

    path = Path(path)
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            im.load()
    except FileNotFoundError:
        raise DataError(f"{what} image {path} not found; check the path") from None
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds
        raise DataError(
            f"{what} image {path} is not a readable image ({type(e).__name__}); give a PNG or JPEG file"
        ) from None
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        im = Image.fromarray((255 * a / max(a.max(), 1)).astype(np.uint8))
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    im = im.convert("RGB")
    if min(im.size) < 1:
        raise DataError(f"{what} image {path} is empty; give a real image")
    return np.asarray(im, dtype=np.uint8).copy()

"""Small synthetic media for the style transfer tests (moving pattern + sine tone), made with PyAV, and
the data module that streams them."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from hybridlearn.style.stylize import build, settings
from hybridlearn.style.video import VideoFramesDataModule


def video_data(path: str | Path, **data) -> VideoFramesDataModule:
    """The data module of `path` with the settings `data` (the rest VideoDataConfig's defaults), as
    stylize() builds it."""
    return build(settings(input=path, data=data).data)


def make_video(
    path: Path,
    frames: int = 12,
    fps: int = 24,
    size: tuple[int, int] = (64, 48),
    audio: bool = True,
    vcodec: str = "libx264",
    acodec: str = "aac",
    rate: int = 44100,
) -> Path:
    """A moving square over a gradient, and (optionally) a 440 Hz stereo tone of the same length."""
    w, h = size
    path = Path(path)
    with av.open(str(path), "w") as c:
        vs = c.add_stream(vcodec, rate=fps)
        vs.width, vs.height = w, h
        vs.pix_fmt = "yuv420p" if vcodec != "rawvideo" else "rgb24"
        if vcodec == "libx264":
            vs.options = {"preset": "ultrafast"}
        astream = None
        if audio:
            astream = c.add_stream(acodec, rate=rate)
            astream.layout = "stereo"
        yy, xx = np.mgrid[0:h, 0:w]
        for i in range(frames):
            img = np.zeros((h, w, 3), np.uint8)
            img[..., 0] = (xx * 255 // max(w - 1, 1)).astype(np.uint8)
            img[..., 1] = (yy * 255 // max(h - 1, 1)).astype(np.uint8)
            img[..., 2] = 128
            x0 = (i * 3) % max(w - 12, 1)
            img[h // 3 : h // 3 + 12, x0 : x0 + 12] = 255
            fr = av.VideoFrame.from_ndarray(img, format="rgb24")
            fr.pts = i
            fr.time_base = Fraction(1, fps)
            for p in vs.encode(fr):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
        if astream is not None:
            n = int(rate * frames / fps)
            t = np.arange(n) / rate
            tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            chunk = 1024
            for s in range(0, n, chunk):
                block = np.stack([tone[s : s + chunk]] * 2)  # planar stereo
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout="stereo")
                af.sample_rate = rate
                af.pts = s
                af.time_base = Fraction(1, rate)
                for p in astream.encode(af):
                    c.mux(p)
            for p in astream.encode(None):
                c.mux(p)
    return path


def make_audio_only(path: Path, seconds: float = 0.5, rate: int = 44100) -> Path:
    with av.open(str(path), "w") as c:
        a = c.add_stream("aac", rate=rate)
        a.layout = "stereo"
        n = int(rate * seconds)
        for s in range(0, n, 1024):
            block = np.zeros((2, min(1024, n - s)), np.float32)
            af = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
            af.sample_rate, af.pts, af.time_base = rate, s, Fraction(1, rate)
            for p in a.encode(af):
                c.mux(p)
        for p in a.encode(None):
            c.mux(p)
    return path


def probe(path: Path) -> dict:
    """frames, fps, duration, audio packets (bytes) of a media file."""
    with av.open(str(path)) as c:
        v = c.streams.video[0] if c.streams.video else None
        a = c.streams.audio[0] if c.streams.audio else None
        out = {"has_audio": a is not None, "audio_codec": a.codec_context.name if a else None}
        if v is not None:
            n = sum(1 for _ in c.decode(v))
            out.update(
                frames=n,
                fps=v.average_rate,
                width=v.codec_context.width,
                height=v.codec_context.height,
                duration=float(v.duration * v.time_base) if v.duration else None,
            )
    if a is not None:
        with av.open(str(path)) as c:
            out["audio_packets"] = [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]
    return out

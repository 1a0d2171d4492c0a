"""The video style transfer stage of `make reproduce` (paper figs. 15-16): one `experiment=style_video`
run per variant, and its report section (preview, frames, a small GIF, the flicker table)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
from omegaconf import DictConfig
from PIL import Image

from hybridlearn.core.io import atomic_output, save_gif
from hybridlearn.core.report import FIG_DIR, completed, copy_png, run_config
from hybridlearn.core.reproduce import PlanContext, ReportContext, Run, flatten

STAGES = ("style",)
# the stylized video in the report: 48 frames, 160 px wide, 64 colours (~0.6 MB for the 23 s demo clip)
GIF_FRAMES = 48


def plan(stage: str, s: DictConfig, ctx: PlanContext) -> list[Run]:
    base = flatten(s.get("set") or {})
    return [
        Run(stage, str(name), ["experiment=style_video", "overwrite=true", *ctx.common, *base, *flatten(over or {})])
        for name, over in (s.get("variants") or {}).items()
    ]


def section(stage: str, ctx: ReportContext) -> list[str]:
    return style_section(ctx.root, ctx.figs, ctx.gif_max_mb, ctx.video_frames_n)


def differences(ctx: ReportContext) -> list[str]:
    return [
        "Video: the paper used TF Hub's arbitrary-image-stylization-v1-256; we run a PyTorch port of the same "
        "network's TF Lite weights (max |diff| 4e-5 against the TF Lite reference, docs/style_video.md) on a "
        "public clip (Big Buck Bunny), since the paper's video is not published."
    ]


def video_frames(video: Path, counts: Sequence[int]) -> tuple[list[list[np.ndarray]], float | None]:
    """For each n of counts, n frames spread evenly over the video (RGB uint8), and the video's
    duration in s (None when the container does not say). Two decoding passes that keep only the
    chosen frames, so a long video never sits in memory whole."""
    with av.open(str(video)) as c:
        st = c.streams.video[0]
        duration = float(st.duration * st.time_base) if st.duration else None
        total = sum(1 for _ in c.decode(video=0))
    if not total:
        return [[] for _ in counts], duration
    picks = [np.linspace(0, total - 1, num=min(n, total)).round().astype(int).tolist() for n in counts]
    wanted = {i for pick in picks for i in pick}
    kept: dict[int, np.ndarray] = {}
    with av.open(str(video)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in wanted:
                kept[i] = f.to_ndarray(format="rgb24")
    return [[kept[i] for i in pick] for pick in picks], duration


def frames_strip(frames: list[np.ndarray], dst: Path, max_width: int = 1400) -> str | None:
    if not frames:
        return None
    ims = [Image.fromarray(f) for f in frames]
    h = ims[0].height
    strip = Image.new("RGB", (sum(i.width for i in ims) + 6 * (len(ims) - 1), h), (255, 255, 255))
    x = 0
    for im in ims:
        strip.paste(im, (x, 0))
        x += im.width + 6
    if strip.width > max_width:
        strip = strip.resize((max_width, max(1, round(h * max_width / strip.width))), Image.LANCZOS)
    with atomic_output(dst) as tmp:
        strip.save(tmp, format="PNG", optimize=True)
    return dst.name


def video_gif(
    frames: list[np.ndarray], duration: float | None, dst: Path, max_mb: float, width: int = 160, colors: int = 64
) -> str | None:
    """A short, small GIF of the stylized video from some of its frames (the MP4 stays out of the report)."""
    if not frames:
        return None
    ims = [Image.fromarray(f) for f in frames]
    s = width / ims[0].width
    ims = [im.resize((width, max(2, round(im.height * s))), Image.LANCZOS).quantize(colors=colors) for im in ims]
    dur = duration if duration else len(frames) / 24
    save_gif(ims, dst, max(40, round(1000 * dur / len(ims))))
    if dst.stat().st_size > max_mb * 2**20:
        dst.unlink()
        return None
    return dst.name


def style_section(root: Path, figs: Path, gif_max_mb: float, n_frames: int) -> list[str]:
    L = ["## 4. Video style transfer (paper figs. 15-16)", ""]
    variants = [p for p in sorted((root / "style").glob("*")) if p.is_dir() and ".stale-" not in p.name]
    done = [(p, completed(p)) for p in variants]
    if not any(r for _, r in done):
        return L + ["Not run (or not finished): `experiment=style_video`.", ""]
    base = next(
        ((p, r) for p, r in done if r and p.name == "per_frame"),
        next((x for x in done if x[1]), None),
    )
    p0, r0 = base
    c = run_config(p0)
    if c is not None:
        L += [
            f"`experiment=style_video`: {Path(str(c.input)).name} stylized with {Path(str(c.style)).name} "
            "(Magenta's arbitrary style network, PyTorch port of the TF Lite weights), every frame, source "
            "timestamps and audio kept.",
            "",
        ]
    previews = sorted(p0.glob("*_preview.png"))
    pv = copy_png(previews[0], figs / "style_fig15_16_frame_style_stylized.png") if previews else None
    if pv:
        L += [
            f"Figs. 15-16, video frame | style image | stylized frame: ![preview]({FIG_DIR}/{pv})",
            "",
        ]
    videos = sorted(p0.glob("*.mp4"))
    if videos:
        (shown, animated), duration = video_frames(videos[0], [n_frames, GIF_FRAMES])
        strip = frames_strip(shown, figs / "style_video_frames.png")
        gif = video_gif(animated, duration, figs / "style_video.gif", gif_max_mb)
        if strip:
            L += [f"Frames of the stylized video: ![frames]({FIG_DIR}/{strip})", ""]
        if gif:
            L += [f"The stylized video (GIF, reduced): ![video]({FIG_DIR}/{gif})", ""]
    L += [
        "### What we add: flicker with and without the temporal option",
        "",
        "Flicker ratio = mean |S_t - S_t-1| of the stylized frames / the same of the input frames "
        "(1: the output changes no more than the input).",
        "",
        "| variant | frames | flicker ratio | input mean frame diff | output mean frame diff |",
        "|---|---|---|---|---|",
    ]
    for p, r in done:
        if not r:
            L.append(f"| {p.name} | not finished | | | |")
            continue
        m = r["metrics"]
        L.append(
            f"| {p.name} | {m.get('frames', '')} | {m.get('flicker_ratio', float('nan')):.3f} | "
            f"{m.get('flicker_input', float('nan')):.4f} | {m.get('flicker_output', float('nan')):.4f} |"
        )
    return L + [""]

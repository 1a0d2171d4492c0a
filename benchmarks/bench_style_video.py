"""Video style transfer benchmark: speed, memory and flicker in one run.

    DATA_DIR=../shared/data python benchmarks/bench_style_video.py [--frames 96] [--rounds 3]

Run it on a quiet machine: it prints the load average before and after and warns when it is above
0.5 per core (then only same-run ratios mean anything).
1. speed: the whole pipeline (decode + stylize + encode, frames forced to 384x384, the TF Lite
   size) with the default torch path, the fp32 reference torch path and backend=tflite on the same
   frames, rounds interleaved so all see the same machine load; frames/s (best and median round),
   model ms/frame, and the ratio default torch / tflite (goal >= 2.0x, medians).
   `--variants compile` adds model.compile=true (its first round pays the compilation).
2. command: the `stylize` command as a user runs it (a fresh process, `python stylize.py input=...
   output=...`, demo clip at its own size 640x360, default options): its own results.json's
   fps_pipeline, the model's frames/s inside that run, the time to the first frame (from the process
   start, warm caches) and, interleaved, the model alone on the same frames already in memory
   (no decode, no encode): pipeline / model-only (goal >= 0.9), medians of the rounds.
   `--baseline KEY=VALUE ...` also runs the command with those overrides in every round (e.g.
   `--baseline malloc_keep_mb=null`: before the malloc setting) and reports the speed-up.
3. memory: peak RSS (VmHWM of a fresh subprocess; ru_maxrss would inherit the parent's) stylizing the clip and the clip
   looped 3x (stream-copied, so the same frames three times) with the torch backend.
4. flicker on the real clip: mean |S_t - S_t-1| / mean |X_t - X_t-1| without and with the temporal
   options, and PSNR of each smoothed video against the per-frame one (how much it changes).
5. profile: the transformer's default path per layer in fp32 on one torch thread, at the command's
   frame size (bench_style_isa.profile_lines: thread CPU time, each conv alone with its GMAC/s).
6. yardstick: one bare LeNet-5 epoch, to compare machines.
Prints a table and writes benchmarks/results_style_video.md.

`--isa avx2` runs all of it (the command's fresh processes and the yardstick included) as on an AVX2-only
CPU: ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2 and MKL_ENABLE_INSTRUCTIONS=AVX2 are set before torch
loads (precision=auto then picks fp32); results in benchmarks/results_style_video_avx2.md. TF Lite's own kernels (XNNPACK) are not
capped by these variables, so leave the speed section's TF Lite ratio out of AVX2 claims.

    python benchmarks/bench_style_video.py --smoke     (a few tiny frames, one round, printed only)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
# absolute, so the `stylize` subprocesses (run from their own folders) find the same data
os.environ["DATA_DIR"] = str(Path(os.environ.get("DATA_DIR") or ROOT / ".." / "shared" / "data").resolve())
from machine import check_load, cpu_model, yardstick_section  # noqa: E402

CLIP = Path(os.environ["DATA_DIR"]) / "video" / "big_buck_bunny_23s.mp4"
STYLE = "starry_night.jpg"


def summarize(rs: list[dict], key: str) -> tuple[float, float]:
    vals = [x[key] for x in rs]
    best = min(vals) if key.startswith("ms") else max(vals)
    return best, statistics.median(vals)


def run_pipeline(inp, out, backend="torch", data=None, model=None) -> dict:
    from hybridlearn.style.stylize import stylize

    t0 = time.perf_counter()
    res = stylize(
        inp,
        STYLE,
        out,
        overwrite=True,
        data=data or {},
        model={"backend": backend, **(model or {})},
        writer={"preview": False, "progress": False},
        progress=False,
    )
    res["wall_s"] = time.perf_counter() - t0
    return res


def run_command(frames: int | None, out_dir: Path, max_side: int | None = None, overrides=()) -> dict:
    """`python stylize.py ...` in a fresh process (as a user runs it); its results.json."""
    args = [
        sys.executable,
        str(ROOT / "stylize.py"),
        f"input={CLIP}",
        f"style={STYLE}",
        f"output={out_dir / 'out.mp4'}",
        "overwrite=true",
        "callbacks.style_writer.preview=false",
        "callbacks.style_writer.progress=false",
        f"hydra.run.dir={out_dir}",
    ]
    if frames:
        args.append(f"data.max_frames={frames}")
    if max_side:
        args.append(f"data.max_side={max_side}")
    args += list(overrides)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HYBRIDLEARN_CONF": str(ROOT / "conf")}
    t0 = time.perf_counter()
    p = subprocess.run(args, capture_output=True, text=True, env=env, cwd=out_dir)
    if p.returncode:
        raise RuntimeError(p.stderr[-2000:])
    res = json.loads((out_dir / "results.json").read_text())
    res = res.get("metrics", res)
    res["wall_s"] = time.perf_counter() - t0
    return res


def model_only_fps(frames: int | None, batch_size: int, max_side: int | None = None) -> tuple[float, int]:
    """The model alone (the command's default options) on the same frames, decoded beforehand:
    frames/s of predict_step over all batches, first (style) batch included as in the command;
    and the torch threads it ran on (threads=auto)."""
    import torch

    from hybridlearn.style.stylize import build, settings

    data = {"batch_size": batch_size, "max_frames": frames, "max_side": max_side, "prefetch": 0}
    cfg = settings(CLIP, STYLE, data=data)
    dm = build(cfg.data)
    dm.setup("predict")
    batches = list(dm.predict_dataloader())
    m = build(cfg.model)
    m.on_predict_start()
    n = sum(b["frames"].shape[0] for b in batches)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i, b in enumerate(batches):
            m.predict_step(b, i)
    return n / (time.perf_counter() - t0), torch.get_num_threads()


def loop_clip(src: Path, dst: Path, times: int = 3) -> Path:
    """Stream-copy `src` `times` times back to back (video and audio timestamps shifted)."""
    import av

    with av.open(str(src)) as probe:
        v = probe.streams.video[0]
        span_s = float(v.duration * v.time_base)
    with av.open(str(dst), "w") as out:
        outs = {}
        for k in range(times):
            with av.open(str(src)) as c:
                streams = [c.streams.video[0]] + ([c.streams.audio[0]] if c.streams.audio else [])
                if not outs:
                    outs = {s.index: out.add_stream_from_template(s) for s in streams}
                for pkt in c.demux(*streams):
                    if pkt.dts is None:
                        continue
                    off = round(k * span_s / pkt.time_base)
                    pkt.pts = None if pkt.pts is None else pkt.pts + off
                    pkt.dts += off
                    pkt.stream = outs[pkt.stream.index]
                    out.mux(pkt)
    return dst


def peak_rss_mb(inp: Path, out: Path, max_side: int) -> tuple[float, dict]:
    src = str(ROOT / "src")
    code = (
        f"import json,resource,sys; sys.path.insert(0, {src!r})\n"
        "from hybridlearn.style.stylize import stylize\n"
        f"r = stylize({str(inp)!r}, {STYLE!r}, {str(out)!r}, overwrite=True, data={{'max_side': {int(max_side)}}}, "
        "writer={'preview': False, 'progress': False}, progress=False)\n"
        "hwm = int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) / 1024\n"
        "print('RESULT', json.dumps({'rss_mb': hwm, 'frames': r['frames_written'], 'fps': r['fps_pipeline']}))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ)
    line = [x for x in p.stdout.splitlines() if x.startswith("RESULT")]
    if p.returncode or not line:
        raise RuntimeError(p.stderr[-2000:])
    r = json.loads(line[0][7:])
    return r["rss_mb"], r


def psnr_between(a: Path, b: Path) -> float:
    import av
    import numpy as np

    se, n = 0.0, 0
    with av.open(str(a)) as ca, av.open(str(b)) as cb:
        for fa, fb in zip(ca.decode(video=0), cb.decode(video=0)):
            x = fa.to_ndarray(format="rgb24").astype(np.float32)
            y = fb.to_ndarray(format="rgb24").astype(np.float32)
            se += float(((x - y) ** 2).mean())
            n += 1
    mse = se / max(n, 1)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=96, help="frames of the clip for the speed runs")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per variant (at least 3)")
    ap.add_argument(
        "--variants",
        nargs="*",
        default=[],
        choices=["compile", "threads1"],
        help="extra torch variants for the speed runs",
    )
    ap.add_argument("--clip-frames", type=int, default=None, help="frames of the 640x360 clip runs (default: all)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--mem-max-side", type=int, default=160, help="frame size of the memory runs (full length)")
    ap.add_argument("--flicker-max-side", type=int, default=384)
    ap.add_argument("--flicker-frames", type=int, default=None, help="default: the whole clip")
    ap.add_argument(
        "--skip", nargs="*", default=[], choices=["speed", "command", "memory", "flicker", "profile", "yardstick"]
    )
    ap.add_argument("--isa", choices=["native", "avx2"], default="native", help="avx2: run as an AVX2-only CPU")
    ap.add_argument("--profile-reps", type=int, default=5, help="forwards of the per-layer profile")
    ap.add_argument("--clip-max-side", type=int, default=None, help="shrink the command's frames (default: 640x360)")
    ap.add_argument(
        "--override",
        nargs="*",
        default=[],
        help="extra overrides for the command, e.g. data.prefetch=0 callbacks.style_writer.encode_queue=0",
    )
    ap.add_argument(
        "--baseline",
        nargs="*",
        default=[],
        help="overrides of a baseline command run interleaved with the default one, e.g. malloc_keep_mb=null",
    )
    ap.add_argument("--out", default=None, help="default: benchmarks/results_style_video[_avx2].md")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="smallest size: 4 frames at max side 96, one round, the speed and command sections, printed only",
    )
    args = ap.parse_args()
    if args.smoke:
        args.frames, args.clip_frames, args.clip_max_side, args.rounds = 4, 4, 96, 1
        args.skip = sorted(set(args.skip) | {"memory", "flicker", "yardstick"})
        args.profile_reps = 2
    elif args.rounds < 3:
        ap.error("--rounds must be at least 3 (best and median of interleaved rounds)")
    if args.out is None and not args.smoke:
        args.out = str(ROOT / "benchmarks" / f"results_style_video{'_avx2' if args.isa == 'avx2' else ''}.md")

    from bench_style_isa import apply_isa_cap, clip_frames, profile_lines

    isa_line = apply_isa_cap(args.isa)  # before torch is imported (the command's processes inherit it)
    import torch

    from hybridlearn.core.memory import DEFAULT_KEEP_MB, keep_freed_memory
    from hybridlearn.style.cpuinfo import cpu_has_fast_bf16

    keep_freed_memory(DEFAULT_KEEP_MB)  # as the command (conf/train.yaml) and stylize() do

    load_before = check_load("before")
    cpu_name, cpu_flags = cpu_model()

    tmp = Path(tempfile.mkdtemp(prefix="bench_style_"))
    lines = [
        "# Video style transfer: benchmark results",
        "",
        f"Machine: {platform.machine()} CPU, {os.cpu_count()} cores visible, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, GPU: {'yes' if torch.cuda.is_available() else 'none'}. "
        f"bf16 dot products (AVX512_BF16/AMX): {'yes' if cpu_has_fast_bf16() else 'no'}. "
        f"{load_before.capitalize()}; rounds are interleaved.",
        f"CPU: {cpu_name} (flags: {cpu_flags}). {isa_line}.",
        f"Command: `python benchmarks/bench_style_video.py {' '.join(sys.argv[1:])}`",
        "",
    ]

    if "speed" not in args.skip:
        data = {
            "size": [96, 96] if args.smoke else [384, 384],
            "max_frames": args.frames,
            "batch_size": args.batch_size,
        }
        variants = {
            "torch (default: precision/layout auto, fused norm)": ("torch", {}),
            "torch (fp32 reference: NCHW, unfused norm)": (
                "torch",
                {"precision": "fp32", "channels_last": False, "fused_norm": False},
            ),
            "tflite (reference, 2 threads)": ("tflite", {"threads": 2}),
        }
        if "compile" in args.variants:
            variants["torch (default + compile=true)"] = ("torch", {"compile": True})
        if "threads1" in args.variants:
            variants["torch (default, threads=1)"] = ("torch", {"threads": 1})
        runs = {k: [] for k in variants}
        for r in range(args.rounds):
            for name, (backend, model) in variants.items():
                res = run_pipeline(CLIP, tmp / "speed.mp4", backend, data, model)
                res["threads"] = torch.get_num_threads() if backend == "torch" else 2
                runs[name].append(res)
                print(
                    f"round {r} {name} ({res['threads']} thr, load {os.getloadavg()[0]:.1f}): "
                    f"{res['fps_pipeline']:.2f} frames/s, model {res['ms_per_frame_model']:.1f} ms/frame",
                    flush=True,
                )
        rows = {b: summarize(rs, "fps_pipeline") + summarize(rs, "ms_per_frame_model") for b, rs in runs.items()}
        ref = rows["tflite (reference, 2 threads)"]
        ratios = {k: (v[0] / ref[0], v[1] / ref[1]) for k, v in rows.items() if not k.startswith("tflite")}
        lines += [
            "## Speed: decode + stylize + encode, 384x384 frames",
            "",
            f"{args.frames} frames of big_buck_bunny_23s.mp4 resized to 384x384, starry_night, batch {args.batch_size}, "
            f"{args.rounds} interleaved rounds.",
            "",
            "| backend | pipeline frames/s (best) | (median) | model ms/frame (best) | (median) | / tflite (median) |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for b, (fb, fm, mb, mm) in rows.items():
            ratio = f"{ratios[b][1]:.2f}x" if b in ratios else "1"
            lines.append(f"| {b} | {fb:.2f} | {fm:.2f} | {mb:.1f} | {mm:.1f} | {ratio} |")
        lines.append("")
        for k, (rb, rm) in ratios.items():
            lines.append(f"{k} / tflite pipeline speed: **{rm:.2f}x** (medians), {rb:.2f}x (best rounds).")
        if "compile" in args.variants:
            lines += [
                "",
                "The compiled variant's first round includes torch.compile (later rounds hit the inductor "
                "cache but still trace the model), which the best round leaves out.",
            ]
        lines.append("")

    if "command" not in args.skip:
        runs, model_only, base_runs = [], [], []
        for r in range(args.rounds):
            if args.baseline:
                run_dir = tmp / f"baseline_{r}"
                run_dir.mkdir()
                base = run_command(args.clip_frames, run_dir, args.clip_max_side, [*args.override, *args.baseline])
                base_runs.append(base)
                print(
                    f"baseline round {r} (load {os.getloadavg()[0]:.1f}): {base['fps_pipeline']:.2f} frames/s, "
                    f"model in the run {base['fps_model']:.2f}, first frame {base.get('first_frame_s', 0):.2f} s",
                    flush=True,
                )
            run_dir = tmp / f"command_{r}"
            run_dir.mkdir()
            res = run_command(args.clip_frames, run_dir, args.clip_max_side, args.override)
            alone, alone_threads = model_only_fps(args.clip_frames, args.batch_size, args.clip_max_side)
            runs.append(res)
            model_only.append(alone)
            print(
                f"command round {r} (load {os.getloadavg()[0]:.1f}): {res['fps_pipeline']:.2f} frames/s, "
                f"model in the run {res['fps_model']:.2f} frames/s ({res.get('torch_threads')} threads), "
                f"model alone {alone:.2f} frames/s ({alone_threads} threads), "
                f"first frame {res.get('first_frame_s', float('nan')):.2f} s, wall {res['wall_s']:.1f} s",
                flush=True,
            )
        med = {k: statistics.median(x[k] for x in runs) for k in ("fps_pipeline", "fps_model", "wall_s")}
        first = statistics.median(x.get("first_frame_s", float("nan")) for x in runs)
        start = statistics.median(x.get("startup_s", float("nan")) for x in runs)
        alone = statistics.median(model_only)
        ratio = statistics.median(x["fps_pipeline"] / a for x, a in zip(runs, model_only))
        size = f"max side {args.clip_max_side}" if args.clip_max_side else "640x360"
        lines += [
            "## The `stylize` command as a user runs it (default options)",
            "",
            f"`python stylize.py input=big_buck_bunny_23s.mp4 style={STYLE} output=out.mp4` in a fresh process, "
            f"{runs[0]['frames_written']} frames at {size}, warm caches, {args.rounds} rounds; each round also runs "
            "the model alone on the same frames already decoded (no decode, no encode). Medians.",
            "",
            "| pipeline frames/s | model in the run frames/s | model alone frames/s | pipeline / model alone "
            "| first frame s | start-up s | wall s |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            f"| {med['fps_pipeline']:.2f} | {med['fps_model']:.2f} | {alone:.2f} | **{ratio:.2f}** "
            f"| {first:.2f} | {start:.2f} | {med['wall_s']:.1f} |",
            "",
            "First frame: from the process start to the first frame encoded; start-up: to the start of the stream "
            "(imports, config, weights, style).",
            "",
        ]
        if base_runs:
            bmed = {k: statistics.median(x[k] for x in base_runs) for k in ("fps_pipeline", "fps_model", "wall_s")}
            bfirst = statistics.median(x.get("first_frame_s", float("nan")) for x in base_runs)
            speedup = statistics.median(x["fps_pipeline"] / b["fps_pipeline"] for x, b in zip(runs, base_runs))
            lines += [
                f"Baseline in the same rounds, `{' '.join(args.baseline)}` (before it, interleaved):",
                "",
                "| command | pipeline frames/s | model in the run frames/s | first frame s | wall s |",
                "| --- | --- | --- | --- | --- |",
                f"| baseline | {bmed['fps_pipeline']:.2f} | {bmed['fps_model']:.2f} | {bfirst:.2f} "
                f"| {bmed['wall_s']:.1f} |",
                f"| default | {med['fps_pipeline']:.2f} | {med['fps_model']:.2f} | {first:.2f} | {med['wall_s']:.1f} |",
                "",
                f"Default / baseline pipeline frames/s: **{speedup:.2f}x** (median of the per-round ratios).",
                "",
            ]

    if "memory" not in args.skip:
        looped = loop_clip(CLIP, tmp / "clip_x3.mp4", 3)
        rss1, r1 = peak_rss_mb(CLIP, tmp / "m1.mp4", args.mem_max_side)
        rss3, r3 = peak_rss_mb(looped, tmp / "m3.mp4", args.mem_max_side)
        print(
            f"memory: clip {rss1:.0f} MB ({r1['frames']} frames), x3 {rss3:.0f} MB ({r3['frames']} frames)", flush=True
        )
        lines += [
            "## Memory: peak RSS (VmHWM) of a fresh process, torch backend",
            "",
            f"Frames resized to max side {args.mem_max_side} so the full-length runs stay short.",
            "",
            "| input | frames | peak RSS MB | frames/s |",
            "| --- | --- | --- | --- |",
            f"| clip (23 s) | {r1['frames']} | {rss1:.0f} | {r1['fps']:.2f} |",
            f"| clip looped 3x (69 s) | {r3['frames']} | {rss3:.0f} | {r3['fps']:.2f} |",
            "",
            f"Ratio x3 / x1: **{rss3 / rss1:.3f}** (streaming: no frame list is kept).",
            "",
        ]

    if "flicker" not in args.skip:
        data = {"max_side": args.flicker_max_side, "batch_size": args.batch_size}
        if args.flicker_frames:
            data["max_frames"] = args.flicker_frames
        configs = [
            ("per frame (default)", {}),
            ("temporal_momentum=0.9", {"temporal_momentum": 0.9}),
            ("temporal_blend=0.6", {"temporal_blend": 0.6}),
            ("momentum 0.9 + blend 0.6", {"temporal_momentum": 0.9, "temporal_blend": 0.6}),
        ]
        lines += [
            "## Flicker on the real clip",
            "",
            f"big_buck_bunny_23s.mp4 ({'all' if not args.flicker_frames else args.flicker_frames} frames, max side "
            f"{args.flicker_max_side}), starry_night. Flicker ratio = mean |S_t - S_t-1| / mean |X_t - X_t-1| "
            "(stylized vs input frames, both in [0,1]); PSNR against the per-frame video measures how much the "
            "option changes the frames.",
            "",
            "| option | flicker ratio | mean abs frame diff (output) | PSNR vs per-frame dB | frames/s |",
            "| --- | --- | --- | --- | --- |",
        ]
        base = None
        for name, model in configs:
            out = tmp / f"flicker_{len(lines)}.mp4"
            res = run_pipeline(CLIP, out, "torch", data, model)
            psnr = "-" if base is None else f"{psnr_between(base, out):.1f}"
            base = base or out
            print(f"flicker {name}: ratio {res['flicker_ratio']:.3f} psnr {psnr}", flush=True)
            lines.append(
                f"| {name} | {res['flicker_ratio']:.3f} | {res['flicker_output']:.4f} | {psnr} | {res['fps_pipeline']:.2f} |"
            )
        lines.append(f"\nInput mean abs frame difference: {res['flicker_input']:.4f}.\n")

    if "profile" not in args.skip:
        size = (360, 640) if not args.clip_max_side else (round(360 * args.clip_max_side / 640), args.clip_max_side)
        frames = clip_frames(args.batch_size, size)
        threads = torch.get_num_threads()
        lines += ["## Per-layer profile of the transformer (fp32)", ""]
        lines += profile_lines(frames, "fp32", args.profile_reps)
        torch.set_num_threads(threads)

    if "yardstick" not in args.skip:
        lines += yardstick_section(torch.get_num_threads())

    lines += [check_load("after").capitalize() + ".", ""]
    text = "\n".join(lines) + "\n"
    print(text)
    from hybridlearn.core.io import write_text_atomic

    shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        write_text_atomic(args.out, text)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

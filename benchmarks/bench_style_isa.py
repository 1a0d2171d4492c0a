"""The style transformer on this CPU, or on it capped to AVX2: which forward path is fastest, and where the time goes.

    DATA_DIR=../shared/data python benchmarks/bench_style_isa.py [--isa avx2] [--rounds 5]
    python benchmarks/bench_style_isa.py --smoke      (tiny frames, one round, printed only: a check that it runs)

`--isa avx2` runs as an AVX2-only CPU would: ONEDNN_MAX_CPU_ISA=AVX2 (oneDNN's convolutions),
ATEN_CPU_CAPABILITY=avx2 (ATen's element-wise kernels) and MKL_ENABLE_INSTRUCTIONS=AVX2 (MKL's matmuls)
are set before torch loads, so an AVX-512 machine stands in for an AVX2-only one; `precision=auto` then
picks fp32 (style/cpuinfo.py). Run it once without
and once with the cap, on a quiet machine (the load average is printed before and after).

1. paths: the model (`StyleTransfer.stylize_tensor`, what a run calls) on the same 640x360 frames with each
   forward path and layout (subpixel / fused / reference x channels_last / NCHW), batch sizes and thread
   settings, including two frames at once on two Python threads of one torch thread each; rounds
   interleaved; wall ms per frame (best, median), CPU ms per frame (all threads: what the frames cost the
   machine; its best round is the least disturbed by other processes), the speed against the default (median of per-round ratios) and PSNR against the fp32
   reference path (8-bit frames: >= 38 dB counts as no loss here).
2. profile: the default path per layer, one torch thread, at --profile-precision (fp32), timed by the
   thread's CPU time (a busy machine inflates it far less than wall time): the whole forward, each
   convolution alone on its shapes with its MACs and GMAC/s against oneDNN's best case on this core (a
   3x3 conv with 128 channels), the rest split over the other ops by kind.
3. yardstick: one bare LeNet-5 epoch (machine.lenet_epoch_s) under the same cap, to compare
   machines before comparing frames/s.
Writes benchmarks/results_style_isa[_avx2].md (not with --smoke).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ["DATA_DIR"] = str(Path(os.environ.get("DATA_DIR") or ROOT / ".." / "shared" / "data").resolve())
CLIP = Path(os.environ["DATA_DIR"]) / "video" / "big_buck_bunny_23s.mp4"
STYLE = "starry_night.jpg"

# the environment that makes torch run as on an AVX2-only CPU (read when torch / oneDNN load)
# (MKL's own cap too: torch's matmuls and 1x1 convolutions may run in MKL, which the other two leave at AVX-512)
ISA_CAPS = {
    "native": {},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}
# the transformer's convolutions in forward order (every path runs them in this order)
CONV_LAYERS = (
    ["contract_conv1", "contract_conv2", "contract_conv3"]
    + [f"residual{i}_conv{j}" for i in range(1, 6) for j in (1, 2)]
    + ["expand_conv1", "expand_conv2", "expand_conv3"]
)
# other ops of the profile, by kind (aten names)
OP_KINDS = {
    "instance norms": ("aten::group_norm", "aten::mean", "aten::var", "aten::rsqrt", "aten::addcmul"),
    "padding copies (+ the ReLU they apply)": (
        "aten::clamp_min",
        "aten::copy_",
        "aten::flip",
        "aten::slice",
        "aten::select",
        "aten::pad",
        "aten::reflection_pad2d",
        "aten::replication_pad2d",
        "aten::empty",
    ),
    "layout changes (NCHW <-> NHWC, space-to-depth)": (
        "aten::contiguous",
        "aten::pixel_unshuffle",
        "aten::pixel_shuffle",
        "aten::reshape",
        "aten::permute",
        "aten::unflatten",
        "aten::view",
        "aten::to",
    ),
    "upsampling": ("aten::upsample_nearest2d", "aten::interpolate"),
    "residual adds, ReLU, sigmoid": ("aten::add_", "aten::add", "aten::relu_", "aten::relu", "aten::sigmoid_"),
}


def apply_isa_cap(isa: str) -> str:
    """Set the cap's environment (before torch is imported: ATen reads it at start-up), then check that
    torch runs under it; returns a line for the results."""
    if isa != "native" and "torch" in sys.modules:
        raise RuntimeError("apply_isa_cap must run before torch is imported")
    os.environ.update(ISA_CAPS[isa])
    import torch

    cap = torch.backends.cpu.get_cpu_capability()
    if isa == "avx2" and cap not in ("AVX2", "DEFAULT"):
        raise RuntimeError(f"ATEN_CPU_CAPABILITY=avx2 did not take: torch reports {cap}")
    caps = " ".join(f"{k}={v}" for k, v in ISA_CAPS[isa].items()) or "none (the CPU's own instruction set)"
    return f"ISA cap: {caps}; torch's CPU capability {cap}"


def conv_peak_gmacs(dtype, reps: int) -> float:
    """What oneDNN reaches on one core here, under the same cap: a 3x3 conv 128 -> 128 channels on a
    64x64 channels-last map (its best case: many channels), multiply-adds per second (thread CPU time)."""
    import torch
    import torch.nn.functional as F

    x = torch.rand(1, 128, 64, 64, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.rand(128, 128, 3, 3, dtype=dtype).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        F.conv2d(x, w)
        return 128 * 128 * 9 * 62 * 62 / thread_ms(lambda: F.conv2d(x, w), 3 * reps) / 1e6


def clip_frames(n: int, size: tuple[int, int]):
    """n frames of the demo clip at size (h, w), float [n, 3, h, w] in [0, 1], spread over its first seconds."""
    import av
    import numpy as np
    import torch

    out = []
    with av.open(str(CLIP)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % 5 == 0:
                out.append(f.to_ndarray(format="rgb24", width=size[1], height=size[0]))
            if len(out) == n:
                break
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div_(255)


def psnr8(a, b) -> float:
    """PSNR (dB) of two [0, 1] images after rounding to 8 bits, as the video gets them."""
    import math

    mse = float(((a * 255).round() - (b * 255).round()).square().mean()) / 255**2
    return float("inf") if mse == 0 else 10 * math.log10(1 / mse)


# ------------------------------------------------------------------------------------ paths
def path_variants(batch: int, precision: str, threads: int) -> dict[str, dict]:
    """name -> (model settings, batch, torch threads, frames at once on their own Python thread)."""
    base = {"precision": precision}
    v = {
        "subpixel, channels_last (default)": dict(model=base, batch=batch, threads=threads, split=1),
        "subpixel, NCHW": dict(model={**base, "channels_last": False}, batch=batch, threads=threads, split=1),
        "fused, channels_last": dict(model={**base, "subpixel": False}, batch=batch, threads=threads, split=1),
        "fused, NCHW": dict(
            model={**base, "subpixel": False, "channels_last": False}, batch=batch, threads=threads, split=1
        ),
        "reference (fused_norm=false), NCHW": dict(
            model={"precision": "fp32", "fused_norm": False, "channels_last": False},
            batch=batch,
            threads=threads,
            split=1,
        ),
    }
    for b in sorted({1, 2, 4, 8} - {batch}):
        v[f"default, batch {b}"] = dict(model=base, batch=b, threads=threads, split=1)
    if threads > 1:
        v["default, 1 thread"] = dict(model=base, batch=batch, threads=1, split=1)
        v[f"default, {threads} frames at once x 1 thread each"] = dict(
            model=base, batch=batch, threads=1, split=threads
        )
    return v


def compare_paths(frames, variants: dict[str, dict], rounds: int) -> list[str]:
    """The variants on the same frames, rounds interleaved; a markdown table."""
    import torch

    from hybridlearn.style.stylize import style_model

    models, pool = {}, ThreadPoolExecutor(max_workers=8)
    with torch.inference_mode():
        for name, v in variants.items():
            m = style_model(STYLE, threads=v["threads"], **v["model"])
            m.set_style(frames[:1])
            models[name] = m
        ref = models["reference (fused_norm=false), NCHW"].stylize_tensor(frames)

        def run(name: str):
            v, m = variants[name], models[name]
            torch.set_num_threads(v["threads"])
            outs = []
            for i in range(0, len(frames), v["batch"]):
                x = frames[i : i + v["batch"]]
                if v["split"] == 1:
                    outs.append(m.stylize_tensor(x))
                else:  # frames of the batch on their own Python threads (torch releases the GIL in its ops)
                    parts = x.tensor_split(v["split"])
                    outs += list(pool.map(m.stylize_tensor, parts))
            return torch.cat(outs)

        quality = {name: psnr8(run(name), ref) for name in variants}  # (also the warm-up)
        wall = {k: [] for k in variants}
        cpu = {k: [] for k in variants}
        for r in range(rounds):
            for name in variants:
                t0, c0 = time.perf_counter(), time.process_time()
                run(name)
                wall[name].append(1000 * (time.perf_counter() - t0) / len(frames))
                cpu[name].append(1000 * (time.process_time() - c0) / len(frames))
            print(f"paths round {r}: load {os.getloadavg()[0]:.1f}", flush=True)
    pool.shutdown()
    default = wall["subpixel, channels_last (default)"]
    lines = [
        "| path | wall ms/frame (best) | (median) | CPU ms/frame (best) | speed vs default (median) | PSNR vs fp32 ref dB |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in variants:
        speed = statistics.median(d / w for d, w in zip(default, wall[name]))
        lines.append(
            f"| {name} | {min(wall[name]):.1f} | {statistics.median(wall[name]):.1f} | "
            f"{min(cpu[name]):.1f} | {speed:.2f}x | {quality[name]:.1f} |"
        )
    best = min(variants, key=lambda k: statistics.median(wall[k]))
    lines += ["", f"Fastest here (median wall time): **{best}**.", ""]
    return lines


# ---------------------------------------------------------------------------------- profile
def conv_macs(shapes: list, stride: int) -> int:
    """Multiply-adds of F.conv2d(x, w) with VALID padding, from the profiler's recorded shapes."""
    (n, _, h, w), (o, c, kh, kw) = shapes[0], shapes[1]
    return n * o * c * kh * kw * ((h - kh) // stride + 1) * ((w - kw) // stride + 1)


def thread_ms(fn, reps: int) -> float:
    """fn's least CPU time of this thread over `reps` calls, in ms (one torch thread: all of its work;
    time the machine gave other processes is not counted, so a busy machine inflates it far less
    than wall time)."""
    best = float("inf")
    for _ in range(reps):
        t0 = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t0)
    return 1000 * best


def profile_lines(frames, precision: str, reps: int) -> list[str]:
    """Per-layer profile of the model's default path on one torch thread (module doc, section 2): the
    whole forward and each convolution alone (its recorded shapes and layout, random values) timed by
    this thread's CPU time; the rest of the forward split over the other ops as the profiler saw them."""
    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    from hybridlearn.style.model import pad_to_multiple
    from hybridlearn.style.stylize import style_model

    torch.set_num_threads(1)
    m = style_model(STYLE, precision=precision, threads=1)
    fmt = torch.channels_last if m.channels_last else torch.contiguous_format
    nf = len(frames)
    with torch.inference_mode():
        m.set_style(frames[:1])
        forward = m.transformer_path()
        x, _ = pad_to_multiple(frames, 4)
        x = x.to(m.compute_dtype).contiguous(memory_format=fmt)
        forward(m.transformer, x, m.params, None, None)  # warm-up
        total = thread_ms(lambda: forward(m.transformer, x, m.params, None, None), reps) / nf
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(reps):
                forward(m.transformer, x, m.params, None, None)
        top = [e for e in prof.events() if e.cpu_parent is None]
        n = len(top) // reps
        per_op = [min(top[r * n + i].cpu_time_total for r in range(reps)) for i in range(n)]
        subpixel = forward.__name__ == "subpixel_forward"
        convs, kinds, layer = [], {}, iter(CONV_LAYERS)
        for e, us in zip(top[:n], per_op):
            if e.name in ("aten::conv2d", "aten::convolution"):
                name = next(layer)
                stride = 2 if name == "contract_conv3" or (name == "contract_conv2" and not subpixel) else 1
                xs, ws = e.input_shapes[0], e.input_shapes[1]
                xi = torch.rand(xs, dtype=m.compute_dtype).contiguous(memory_format=fmt)
                wi = torch.rand(ws, dtype=m.compute_dtype).contiguous(memory_format=fmt)
                ms = thread_ms(lambda xi=xi, wi=wi, stride=stride: F.conv2d(xi, wi, None, stride), reps) / nf
                convs.append((name, ws, conv_macs(e.input_shapes, stride) / nf, ms))
            else:
                kind = next((k for k, ops in OP_KINDS.items() if e.name in ops), "other (weights, small ops)")
                kinds[kind] = kinds.get(kind, 0.0) + us
    peak = conv_peak_gmacs(m.compute_dtype, reps)
    h, w = frames.shape[-2:]
    conv_ms = sum(c[3] for c in convs)
    macs = sum(c[2] for c in convs)
    rest, rest_us = max(total - conv_ms, 0.0), sum(kinds.values()) or 1.0
    lines = [
        f"The default path ({forward.__name__}, {str(m.compute_dtype).removeprefix('torch.')}, "
        f"{'channels_last' if m.channels_last else 'NCHW'}), {w}x{h} frames, batch {nf}, **one torch thread**, "
        f"timed by the thread's CPU time (least of {reps}): the whole forward **{total:.1f} ms per frame of one "
        f"core** ({1000 / total:.1f} frames/s on one core; two cores at best twice that, before decoding, "
        "encoding and the optical flow of the warp error). Each convolution alone on its shapes; the rest of "
        "the forward (total - convolutions) split over the other ops as the profiler timed them.",
        "",
        f"oneDNN's best case on one core under the same cap (a 3x3 conv 128 -> 128 channels, 64x64): "
        f"**{peak:.1f} GMAC/s** (the `of best` column).",
        "",
        "| layer | weight | MMAC/frame | ms/frame | share | GMAC/s | of best |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, shape, mac, ms in convs:
        rate = mac / ms / 1e6
        of_peak = f"{100 * rate / peak:.0f} %"
        lines.append(
            f"| {name} | {'x'.join(map(str, shape))} | {mac / 1e6:.0f} | {ms:.2f} | {100 * ms / total:.1f} % "
            f"| {rate:.1f} | {of_peak} |"
        )
    rate = macs / conv_ms / 1e6
    lines.append(
        f"| **all convolutions** | | **{macs / 1e6:.0f}** | **{conv_ms:.1f}** | **{100 * conv_ms / total:.0f} %** "
        f"| **{rate:.1f}** | {100 * rate / peak:.0f} % |"
    )
    for kind, us in sorted(kinds.items(), key=lambda kv: -kv[1]):
        ms = rest * us / rest_us
        lines.append(f"| {kind} | | | {ms:.2f} | {100 * ms / total:.1f} % | | |")
    lines.append("")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--isa", choices=sorted(ISA_CAPS), default="native", help="avx2: run as an AVX2-only CPU")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the paths (at least 3)")
    ap.add_argument("--frames", type=int, default=8, help="frames of the demo clip for the paths")
    ap.add_argument("--size", type=int, nargs=2, default=[360, 640], metavar=("H", "W"))
    ap.add_argument("--batch-size", type=int, default=4, help="data.batch_size of the default")
    ap.add_argument("--precision", default="auto", help="model.precision of the paths (auto: the model's choice)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the default (default: torch's)")
    ap.add_argument("--profile-precision", default="fp32")
    ap.add_argument("--profile-reps", type=int, default=5)
    ap.add_argument("--skip", nargs="*", default=[], choices=["paths", "profile", "yardstick"])
    ap.add_argument("--out", default=None, help="default: benchmarks/results_style_isa[_avx2].md")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.rounds, args.frames, args.size, args.profile_reps = 1, 2, [36, 64], 2
        args.skip = sorted(set(args.skip) | {"yardstick"})
    elif args.rounds < 3:
        ap.error("--rounds must be at least 3 (best and median of interleaved rounds)")

    isa_line = apply_isa_cap(args.isa)  # before torch is imported
    import torch
    from machine import check_load, cpu_model, yardstick_section

    from hybridlearn.core.io import write_text_atomic
    from hybridlearn.style.cpuinfo import cpu_has_fast_bf16

    threads = args.threads or torch.get_num_threads()
    load = check_load("before")
    name, flags = cpu_model()
    frames = clip_frames(args.frames, tuple(args.size))
    lines = [
        f"# Style transformer paths and profile ({args.isa})",
        "",
        f"CPU: {name} (flags: {flags}); {os.cpu_count()} cores visible, torch {torch.__version__}, {threads} threads "
        f"for the default. {isa_line}. precision=auto picks "
        f"{'bf16' if cpu_has_fast_bf16() else 'fp32'} here. {load.capitalize()}.",
        f"Command: `python benchmarks/bench_style_isa.py {' '.join(sys.argv[1:])}`",
        "",
    ]
    if "paths" not in args.skip:
        variants = path_variants(args.batch_size, args.precision, threads)
        lines += [
            "## Forward paths (the model's stylize_tensor)",
            "",
            f"{args.frames} frames of the demo clip at {args.size[1]}x{args.size[0]}, precision={args.precision}, "
            f"{args.rounds} interleaved rounds.",
            "",
            *compare_paths(frames, variants, args.rounds),
        ]
    if "profile" not in args.skip:
        lines += [
            "## Per-layer profile",
            "",
            *profile_lines(frames[: args.batch_size], args.profile_precision, args.profile_reps),
        ]
    if "yardstick" not in args.skip:
        torch.set_num_threads(threads)
        lines += yardstick_section(threads, " under the same cap")
    lines += [check_load("after").capitalize() + ".", ""]
    text = "\n".join(lines) + "\n"
    print(text)
    out = args.out or str(ROOT / "benchmarks" / f"results_style_isa{'_avx2' if args.isa == 'avx2' else ''}.md")
    if not args.smoke:
        write_text_atomic(out, text)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Is an int8 style transformer worth it on this CPU? Speed and PSNR against fp32 (issue 24).

    DATA_DIR=../shared/data python benchmarks/exp_style_int8.py [--frames 16] [--rounds 3]

torch 2.14.1 has no `torch.ao.quantization.quantize_pt2e` (PT2E moved to torchao, a new dependency
that also needs inductor: minutes of compilation). Its x86 backend lowers quantized convolutions
to oneDNN's `onednn::qconv2d_pointwise`, which torch itself ships; this script calls that op
directly. Weights: int8, symmetric, per output channel. Activations: uint8, per tensor, scaled to
each batch's own range (dynamic: at least as accurate as PT2E's static calibration; the residual
stream is signed, zero point 128). Instance norms, ReLU and sigmoid stay in fp32.

1. convolutions: each of the transformer's conv shapes at 640x360 (batch 4), bf16 (the default
   path) vs int8, interleaved rounds;
2. the whole transformer: int8 vs the default bf16 path, ms per frame;
3. PSNR against fp32 on frames of the demo clip (starry_night), and with only one activation
   quantized at a time (all else fp32): which layers lose the most.
Writes benchmarks/results_style_int8.md.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import av  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from hybridlearn.core.io import write_text_atomic  # noqa: E402
from hybridlearn.style import fused as FU  # noqa: E402
from hybridlearn.style import subpixel as SP  # noqa: E402
from hybridlearn.style.model import prepare_transformer  # noqa: E402
from hybridlearn.style.nets import StyleTransformer  # noqa: E402
from hybridlearn.style.stylize import style_model  # noqa: E402

warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")  # deprecated in 2.14, still there
# absolute, in the environment: the model (hybridlearn.style.stylize.settings) reads DATA_DIR there
os.environ["DATA_DIR"] = str(Path(os.environ.get("DATA_DIR") or ROOT / ".." / "shared" / "data").resolve())
DATA_DIR = Path(os.environ["DATA_DIR"])
CLIP = DATA_DIR / "video" / "big_buck_bunny_23s.mp4"


def clip_frames(n: int, step: int = 30) -> torch.Tensor:
    """n frames of the demo clip (every `step`-th), uint8 [n, 3, 360, 640]."""
    out = []
    with av.open(str(CLIP)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % step == 0:
                out.append(f.to_ndarray(format="rgb24"))
            if len(out) == n:
                break
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)


class QConv:
    """One convolution in int8 (oneDNN): per-channel int8 weights, uint8 input with (scale, zero
    point), fp32 output; VALID padding (the caller pads). `w`: the fp32 weights (the ablation's)."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor, stride: int = 1):
        # (copies: prepare() casts the module's own tensors later)
        self.w, self.b, self.stride = w.detach().float().clone(), b.detach().float().clone(), [stride, stride]
        w = self.w
        self.ws = w.abs().amax(dim=(1, 2, 3)).clamp_min(1e-12) / 127
        self.qw = (w / self.ws[:, None, None, None]).round().clamp(-127, 127).to(torch.int8)
        self.wzp = torch.zeros(w.shape[0], dtype=torch.long)
        self.packed: dict = {}

    def __call__(self, qx: torch.Tensor, xs: float, xzp: int, relu: bool = False) -> torch.Tensor:
        key = (tuple(qx.shape), xzp)  # the prepacked weights depend on the input's zero point
        if key not in self.packed:
            self.packed[key] = torch.ops.onednn.qconv_prepack(
                self.qw, self.ws, xs, xzp, self.stride, [0, 0], [1, 1], 1, list(qx.shape)
            )
        return torch.ops.onednn.qconv2d_pointwise(
            qx, xs, xzp, self.packed[key], self.ws, self.wzp, self.b, self.stride, [0, 0], [1, 1], 1,
            1.0, 0, torch.float32, "relu" if relu else "none", [], "",
        )  # fmt: skip


def quantize(x: torch.Tensor, signed: bool = False) -> tuple[torch.Tensor, float, int]:
    """fp32 -> (uint8, scale, zero point) from this batch's range."""
    if signed:
        s, zp = max(-float(x.amin()), float(x.amax()), 1e-8) / 127.5, 128
    else:
        s, zp = max(float(x.amax()), 1e-8) / 255, 0
    return torch.quantize_per_tensor(x, s, zp, torch.quint8).int_repr(), s, zp


class Int8Transformer:
    """StyleTransformer's subpixel path with every convolution in int8. `exact` (a set of
    activation indices 0..14, or None): those activations are not quantized and their conv runs
    in fp32 (the ablation)."""

    def __init__(self, t: StyleTransformer):
        k = SP.subpixel_weights(t)  # (t in fp32, NCHW)
        self.convs = [QConv(*k["contract_conv1"]), QConv(*k["contract_conv2"])]
        self.convs.append(QConv(t.contract_conv3.weight, t.contract_conv3.bias, 2))
        for i in range(1, 6):
            for j in (1, 2):
                c = t.get_submodule(f"residual{i}_conv{j}")
                self.convs.append(QConv(c.weight, c.bias))
        self.convs += [QConv(t.expand_conv1.weight, t.expand_conv1.bias), QConv(*k["expand_conv2"])]
        self.convs.append(QConv(*k["expand_conv3"]))
        self.exact: set[int] | None = None

    def _conv(self, i: int, x: torch.Tensor, pad, relu: bool = False, signed: bool = False) -> torch.Tensor:
        """conv i on activation x (float), padded by `pad`; activation i - 1 is x (0: the frames)."""
        if self.exact is not None and (i == 0 or i - 1 in self.exact):
            c = self.convs[i]
            y = F.conv2d(pad(x.float()), c.w, c.b, c.stride)
            return y.relu_() if relu else y
        if i == 0:  # the frames are uint8 already: scale 1/255 is exact
            return self.convs[0](pad(x), 1 / 255, 0, relu)
        q, s, zp = quantize(x, signed)
        return self.convs[i](pad(q), s, zp, relu)

    def __call__(self, frames: torch.Tensor, params) -> torch.Tensor:
        def cin(y, name, relu, phases=1):
            beta, gamma = params[name]
            y = FU.group_norm_cin(y, beta, gamma, phases)
            return y.relu_() if relu else y

        x = frames.contiguous(memory_format=torch.channels_last)
        if self.exact is not None:
            x = x.float().div(255)
        y = self._conv(0, x, lambda t: F.pixel_unshuffle(FU.reflect_pad(t, 4), 2), relu=True)
        y = self._conv(1, y, SP.pad_top_left, relu=True)
        x = self._conv(2, y, lambda t: FU.reflect_pad(t, 1), relu=True)
        for r in range(5):
            y = cin(
                self._conv(3 + 2 * r, x, lambda t: FU.reflect_pad(t, 1), signed=True), f"residual{r + 1}_conv1", True
            )
            x = cin(self._conv(4 + 2 * r, y, lambda t: FU.reflect_pad(t, 1)), f"residual{r + 1}_conv2", False).add_(x)
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        y = cin(self._conv(13, x, lambda t: FU.reflect_pad(t, 1), signed=True), "expand_conv1", True)
        y = cin(self._conv(14, y, SP.pad_replicate1), "expand_conv2", True, phases=4)
        y = cin(self._conv(15, y, SP.reflect_pad4_s2d), "expand_conv3", False, phases=4)
        return SP.depth_to_space2(y.sigmoid_())


ACTIVATIONS = ["contract_conv1", "contract_conv2", "contract_conv3"] + [
    f"residual{i}_conv{j}" for i in range(1, 6) for j in (1, 2)
] + ["expand_conv1", "expand_conv2"]  # the output of each; the input of the next conv  # fmt: skip


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (a.float() - b.float()).square().mean()))


def timed(f, n: int) -> float:
    """Median seconds of n calls after one warm-up."""
    f()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def conv_shapes(batch: int) -> list[tuple]:
    """(label, input [B, C, H, W] after padding, out channels, kernel, stride) of the subpixel path at 640x360."""
    return [
        ("contract_conv1 (s2d 5x5)", (batch, 12, 184, 324), 32, 5, 1),
        ("contract_conv2 (s2d 2x2)", (batch, 32, 181, 321), 16, 2, 1),
        ("contract_conv3", (batch, 16, 182, 322), 32, 3, 2),
        ("residual x10", (batch, 32, 92, 162), 32, 3, 1),
        ("expand_conv1", (batch, 32, 182, 322), 16, 3, 1),
        ("expand_conv2 (sub-pixel)", (batch, 16, 182, 322), 32, 3, 1),
        ("expand_conv3 (s2d 5x5)", (batch, 32, 184, 324), 12, 5, 1),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=16, help="clip frames for PSNR (a multiple of the batch)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results_style_int8.md"))
    args = ap.parse_args()
    load = os.getloadavg()[0]
    g = torch.Generator().manual_seed(0)
    lines = [
        "# int8 style transformer (oneDNN, the x86 backend's kernels) vs the default bf16 path",
        "",
        f"`python benchmarks/exp_style_int8.py --frames {args.frames} --batch {args.batch} --rounds {args.rounds}`; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, load average "
        f"before {load:.2f}. 640x360 frames of big_buck_bunny_23s.mp4, starry_night, batch {args.batch}.",
        "",
        "## Convolutions alone (ms per batch, median of interleaved rounds)",
        "",
        "| conv | bf16 | int8 | bf16 / int8 |",
        "| --- | --- | --- | --- |",
    ]
    with torch.inference_mode():
        for label, shape, o, k, s in conv_shapes(args.batch):
            x = torch.rand(shape, generator=g).contiguous(memory_format=torch.channels_last)
            w, b = torch.randn(o, shape[1], k, k, generator=g) * 0.1, torch.randn(o, generator=g)
            xb, wb = x.bfloat16(), w.bfloat16().contiguous(memory_format=torch.channels_last)
            qc, qx = QConv(w, b, s), (x * 255).round().to(torch.uint8)
            run_bf16 = functools.partial(F.conv2d, xb, wb, b.bfloat16(), s)
            run_int8 = functools.partial(qc, qx, 1 / 255, 0)
            tb, tq = [], []
            for _ in range(args.rounds):
                tb.append(timed(run_bf16, 10))
                tq.append(timed(run_int8, 10))
            mb, mq = statistics.median(tb) * 1e3, statistics.median(tq) * 1e3
            lines.append(f"| {label} | {mb:.2f} | {mq:.2f} | {mb / mq:.2f}x |")
            print(lines[-1], flush=True)

        frames = clip_frames(args.frames)
        x = frames.float().div(255)
        m = style_model("starry_night.jpg")
        m.set_style(x[:1])
        t, params = m.transformer, m.params
        batches = range(0, args.frames, args.batch)
        prepare_transformer(t, torch.float32, False)
        ref = torch.cat([t(x[i : i + args.batch], params) for i in batches])  # the reference path
        q8 = Int8Transformer(t)
        prepare_transformer(t, torch.bfloat16, True)  # the default CPU path (precision=auto on AVX512_BF16)
        xb = x.bfloat16().contiguous(memory_format=torch.channels_last)
        bf = torch.cat([SP.subpixel_forward(t, xb[i : i + args.batch], params) for i in batches]).float()
        out = torch.cat([q8(frames[i : i + args.batch], params) for i in batches])
        f4, x4 = frames[: args.batch], xb[: args.batch]
        tb, tq = [], []
        for _ in range(args.rounds):
            tb.append(timed(lambda: SP.subpixel_forward(t, x4, params), 5))
            tq.append(timed(lambda: q8(f4, params), 5))
        mb, mq = (statistics.median(v) * 1e3 / args.batch for v in (tb, tq))
        per_frame = [psnr(out[i], ref[i]) for i in range(args.frames)]
        lines += [
            "",
            "## The whole transformer",
            "",
            "| path | ms per frame (median) | PSNR vs fp32 dB (all frames) | worst frame dB |",
            "| --- | --- | --- | --- |",
            f"| bf16 (default) | {mb:.2f} | {psnr(bf, ref):.2f} | {min(psnr(bf[i], ref[i]) for i in range(args.frames)):.2f} |",
            f"| int8 (every conv) | {mq:.2f} | {psnr(out, ref):.2f} | {min(per_frame):.2f} |",
            "",
            "## One activation quantized at a time (all else fp32)",
            "",
            "| activation (output of) | PSNR vs fp32 dB |",
            "| --- | --- |",
        ]
        print("\n".join(lines[-9:]), flush=True)
        for a, name in enumerate(ACTIVATIONS):
            q8.exact = set(range(len(ACTIVATIONS))) - {a}
            y = torch.cat([q8(frames[i : i + args.batch], params) for i in batches])
            lines.append(f"| {name} | {psnr(y, ref):.2f} |")
            print(lines[-1], flush=True)
    lines += ["", f"Load average after: {os.getloadavg()[0]:.2f}.", ""]
    write_text_atomic(args.out, "\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Helpers shared by the network tests: the reference nets from the converted Magenta weights, two
real frames, and running one transformer path as the model does."""

from __future__ import annotations

import copy
from pathlib import Path

import av
import numpy as np
import torch

from hybridlearn.style.convert import convert, load_weights
from hybridlearn.style.model import prepare_transformer
from hybridlearn.style.nets import StylePredictor, StyleTransformer

PRED = "magenta_style_predict_int8.tflite"
FP16 = "magenta_style_transfer_fp16.tflite"
INT8 = "magenta_style_transfer_int8.tflite"


def reference_nets(data_dir: Path, folder: Path) -> tuple[StylePredictor, StyleTransformer]:
    """Both nets with the weights converted from the TF Lite files (into `folder`)."""
    models = data_dir / "models"
    w = load_weights(convert(models / PRED, models / FP16, folder / "magenta.pt"))
    p, t = StylePredictor().eval(), StyleTransformer().eval()
    p.load_state_dict(w["predictor"])
    t.load_state_dict(w["transformer"])
    return p, t


def clip_frames(data_dir: Path, indices=(60, 200), size=(96, 160)) -> torch.Tensor:
    """Real frames of the demo clip [N, 3, H, W] in [0, 1] (H, W divisible by 4 as the net needs)."""
    out = []
    with av.open(str(data_dir / "video" / "big_buck_bunny_23s.mp4")) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in indices:
                out.append(f.to_ndarray(format="rgb24", width=size[1], height=size[0]))
            if len(out) == len(indices):
                break
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255


def style_params(t: StyleTransformer, seed: int = 0):
    z = torch.randn(1, 100, generator=torch.Generator().manual_seed(seed)) * 0.5
    with torch.inference_mode():
        return t.style_params(z)


def run_path(path, t, x, dtype=torch.float32, channels_last=False, temporal=None):
    """path(net, x, params, temporal) on a fresh copy of t prepared as the model prepares it."""
    t = copy.deepcopy(t)
    params = style_params(t)
    with torch.inference_mode():
        prepare_transformer(t, dtype, channels_last)
        x = x.to(dtype).contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        return path(t, x, params, temporal).float()


def reference(t, x, temporal=None):
    """The reference forward in fp32 NCHW."""
    return run_path(StyleTransformer.__call__, t, x, temporal=temporal)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [0, 1] after rounding to 8 bits (what the video gets)."""
    mse = float(((a.float() * 255).round() - (b.float() * 255).round()).square().mean()) / 255**2
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)

"""Arbitrary style transfer of videos (paper sections 2.3, 2.5, 3.3.2), as a stream.

`StyleTransfer` (LightningModule, run by `trainer.predict`) stylizes batches of frames from
`hybridlearn.style.video.VideoFramesDataModule` with the fast arbitrary style network of
Ghiasi et al. 2017; `StylizedVideoWriter` (a BasePredictionWriter callback) encodes them with PyAV
at the source timestamps and copies the source audio packet for packet. `stylize()` runs the
whole thing from Python; `stylize.py` / `experiment=style_video` from the command line.

Backends (`backend`): torch (PyTorch port, weights converted from the TF Lite files and cached),
tflite (the TF Lite files, reference), tfhub (a TF Hub SavedModel). See docs/style_video.md.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hybridlearn.core.errors import DataError
from hybridlearn.style import backends as sb
from hybridlearn.style import cpuload
from hybridlearn.style.consistency import FlickerMeter, WarpErrorMeter, frame_changes
from hybridlearn.style.convert import cached_weights, default_cache_dir, load_weights
from hybridlearn.style.cpuinfo import cpu_has_fast_bf16
from hybridlearn.style.flow import FlowEstimator
from hybridlearn.style.fused import fused_forward
from hybridlearn.style.nets import StylePredictor, StyleTransformer, TemporalStats
from hybridlearn.style.sources import ensure_models, resolve_style
from hybridlearn.style.subpixel import subpixel_forward
from hybridlearn.style.temporal import TemporalFilter
from hybridlearn.style.video import load_rgb

log = logging.getLogger(__name__)
warnings.filterwarnings("ignore", message=".*infer the batch indices.*")

STYLE_SIZE = 256
_DEFAULT_THREADS = torch.get_num_threads()


# ----------------------------------------------------------------------------- images


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [1, 3, H, W] in [0, 1]"""
    return torch.from_numpy(img).permute(2, 0, 1)[None].float().div_(255)


def style_input(img: np.ndarray | torch.Tensor, size: int = STYLE_SIZE) -> torch.Tensor:
    """Centre square crop, resized to size x size (antialiased): the predictor's input [1, 3, s, s]."""
    x = to_tensor(img) if isinstance(img, np.ndarray) else img.float()
    h, w = x.shape[-2:]
    m = min(h, w)
    top, left = (h - m) // 2, (w - m) // 2
    x = x[..., top : top + m, left : left + m]
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)


def pad_to_multiple(x: torch.Tensor, k: int = 4) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad [B, C, H, W] bottom / right (reflect, replicate when too small) to multiples of k."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % k, (-w) % k
    if ph or pw:
        mode = "reflect" if h > ph and w > pw else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


def prepare_transformer(net: StyleTransformer, dtype: torch.dtype, channels_last: bool) -> None:
    """Cast and lay out the convolutions for inference; the style maps (beta / gamma) stay as they
    are, so `style_params` keeps its precision whatever the compute dtype."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            m.to(dtype=dtype, memory_format=fmt)


# ----------------------------------------------------------------------------- module
class StylizedBatch:
    """What predict_step returns: a plain object (not a collection) so Lightning never copies
    or keeps the frames; the writer calls release() once they are encoded."""

    __slots__ = ("frames", "pts", "index", "source")

    def __init__(self, frames: torch.Tensor, pts: torch.Tensor, index: torch.Tensor, source: torch.Tensor | None):
        self.frames, self.pts, self.index, self.source = frames, pts, index, source

    def release(self) -> None:
        self.frames = self.source = None


def model_files(models_dir, data_dir, predict_file: str, transfer_file: str) -> tuple[Path, Path]:
    """The two Magenta .tflite files: absolute as given, else in models_dir (default DATA_DIR/models)."""
    models = Path(models_dir) if models_dir else (Path(data_dir) / "models" if data_dir else Path("models"))
    return tuple(Path(f) if Path(f).is_absolute() else models / f for f in (predict_file, transfer_file))


class StyleTransfer(L.LightningModule):
    """Stylize frames with one style image (Ghiasi et al. 2017).

    style_image: path (as given, or under DATA_DIR/styles). strength in [0, 1]: blend of the style
    vector with the content's own (first frame's) style vector, as Magenta does. backend: torch |
    tflite | tfhub. precision: auto (fp16 on GPU, bf16 on CPUs with AVX512_BF16 / AMX, else fp32) |
    fp32 | fp16 | bf16. channels_last / fused_norm / subpixel / compile: speed options
    (docs/style_video.md).
    temporal_momentum: EMA factor of the instance-norm statistics over time (0 = per frame).
    temporal_blend: motion-gated blending with the previous stylized frame (0 = off); pixels whose
    input changed by more than blend_tau (in [0, 1]) are not blended.
    temporal_flow: motion-compensated blending (0 = off): the previous stylized frame, warped by
    the optical flow of the input frames, weighs this much on pixels the forward-backward check
    finds visible in both frames, less where the warped previous input differs from this one by up
    to flow_tau (in [0, 1]), not at all beyond. cut_threshold: a mean input change above it is a
    scene cut (resets all three).
    measure_flicker / measure_warp: the flicker ratio / the warped temporal error in the results
    (style/consistency.py). flow_max_side / flow_preset: the size the optical flow (and the warp
    error) is computed at, the longer side at most this, and DIS's preset (style/flow.py).
    Every argument is a setting of StyleTransferConfig (style/conf.py: default, range, help).
    """

    def __init__(
        self,
        style_image: str | None,
        data_dir: str | None,
        backend: str,
        strength: float,
        models_dir: str | None,
        predict_file: str,
        transfer_file: str,
        weights: str | None,
        cache_dir: str | None,
        tfhub_handle: str,
        precision: str,
        channels_last: bool | str,
        compile: bool,
        fused_norm: bool,
        subpixel: bool,
        threads: int | str | None,
        temporal_momentum: float,
        temporal_blend: float,
        blend_tau: float,
        temporal_flow: float,
        flow_tau: float,
        cut_threshold: float,
        measure_flicker: bool,
        measure_warp: bool,
        flow_max_side: int | None,
        flow_preset: str,
        mirrors: list | str | None,
        download_timeout: float | None,
    ):
        super().__init__()
        self.strength = float(strength)
        self.save_hyperparameters()

        # a path, a URL, or a known painting (downloaded into DATA_DIR/styles when missing)
        self.style_path = resolve_style(
            style_image, data_dir, cache_dir or default_cache_dir(), mirrors, download_timeout
        )
        self.style_rgb = load_rgb(self.style_path, "style")  # fails early on a bad style image
        self.backend, self.threads = backend, threads
        self.precision_mode, self.channels_last_mode, self.use_compile = precision, channels_last, bool(compile)
        self._forward = None
        self.predict_file, self.transfer_file = model_files(models_dir, data_dir, predict_file, transfer_file)
        if backend == "tflite" or (backend == "torch" and not weights):  # known files: fetched when missing
            ensure_models([self.predict_file, self.transfer_file], mirrors, download_timeout)
        self.predictor = self.transformer = None
        self.ref = None
        if backend == "torch":
            self._build_torch(weights, cache_dir)
        self.extra_results: dict[str, Any] = {}
        self._reset_stream()
        self._cpu_since = cpuload.sample()  # threads=auto: what other processes use from now to the stream
        self._threads_before: int | None = None

    # --- backends
    def _build_torch(self, weights, cache_dir) -> None:
        path = (
            Path(weights).expanduser() if weights else cached_weights(self.predict_file, self.transfer_file, cache_dir)
        )
        if not path.is_file():
            raise DataError(f"model.weights {path} not found; run python -m hybridlearn.style.convert --out {path}")
        payload = load_weights(path)
        self.predictor = StylePredictor().eval()
        self.transformer = StyleTransformer().eval()
        # assign: the loaded tensors become the parameters (a copy into the fresh ones took 0.25 s of start-up)
        self.predictor.load_state_dict(payload["predictor"], assign=True)
        self.transformer.load_state_dict(payload["transformer"], assign=True)
        for p in self.parameters():
            p.requires_grad_(False)
        self.weights_path = path

    def _build_reference(self) -> None:
        if self.backend == "tflite":
            n = self.threads if isinstance(self.threads, int) else None
            self.ref = sb.TFLiteBackend(self.predict_file, self.transfer_file, n)
        else:
            self.ref = sb.TFHubBackend(self.hparams.tfhub_handle)

    def _reset_stream(self) -> None:
        self.z = None
        self.params = None
        self.temporal = TemporalStats(float(self.hparams.temporal_momentum))
        hp = self.hparams
        self.prev_in = None  # (for the scene cuts)
        self.filter = TemporalFilter(hp.temporal_flow, hp.flow_tau, hp.temporal_blend, hp.blend_tau)
        self.flicker = FlickerMeter()
        # optical flow of the input frames: for the warp error and / or temporal_flow
        flow_needed = hp.measure_warp or hp.temporal_flow > 0
        self.flow = FlowEstimator(hp.flow_max_side, hp.flow_preset) if flow_needed else None
        self.warp_meter = WarpErrorMeter() if hp.measure_warp else None
        self.n_frames = 0
        self.compute_s = self.flow_s = self.warp_measure_s = 0.0

    @property
    def compute_dtype(self) -> torch.dtype:
        """precision=auto: fp16 on GPU; bf16 on CPUs with native bf16 dot products (AVX512_BF16 /
        AMX: 2.4x fp32 here, 44 dB PSNR against fp32), fp32 on other CPUs (emulated bf16 is slow)."""
        p = self.precision_mode
        if p == "auto":
            if self.device.type == "cuda":
                return torch.float16
            return torch.bfloat16 if self.device.type == "cpu" and cpu_has_fast_bf16() else torch.float32
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[p]

    @property
    def channels_last(self) -> bool:
        """channels_last=auto: on CPU (oneDNN convs with 3-32 channels are 2-5x faster in NHWC)."""
        if self.channels_last_mode == "auto":
            return self.device.type == "cpu"
        return bool(self.channels_last_mode)

    # --- style vectors
    @torch.inference_mode()
    def style_vector(self, img: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Style vector z [1, 100] of an image (uint8 HWC array or float [1, 3, H, W])."""
        x = style_input(img).to(self.device)
        if self.backend == "torch":
            return self.predictor(x.float()).float()
        if self.ref is None:
            self._build_reference()
        return self.ref.style_vector(x).to(self.device)

    def set_style(self, content: torch.Tensor | None) -> None:
        """Prepare the style for the frames to come; content: the first frame [1, 3, H, W]."""
        if self.backend == "tfhub":
            if self.ref is None:
                self._build_reference()
            self.ref.set_style(style_input(self.style_rgb))
            return
        z = self.style_vector(self.style_rgb)
        if self.strength < 1.0 and content is not None:
            z = self.strength * z + (1 - self.strength) * self.style_vector(content)
        self.z = z
        if self.backend == "torch":
            with torch.inference_mode():  # (the style maps stay fp32; only the convolutions are cast)
                self.params = {
                    k: (b.float(), g.float()) for k, (b, g) in self.transformer.style_params(z.float()).items()
                }
            prepare_transformer(self.transformer, self.compute_dtype, self.channels_last)
            self._forward = self.transformer_path()
            if self.use_compile:
                # static shapes: one compilation per frame size (the last batch is padded to full size)
                self._forward = torch.compile(self._forward, dynamic=False)

    def transformer_path(self):
        """The transformer's forward for this run, f(net, x, params, temporal, cuts): the reference
        (fused_norm=false), subpixel (the default, without temporal_momentum) or fused."""
        if not self.hparams.fused_norm:
            return StyleTransformer.__call__
        if self.hparams.subpixel and not self.temporal.active:
            return subpixel_forward
        return fused_forward

    def _set_threads(self) -> None:
        """threads: an int, or null/"auto": torch's default, less the cores other processes keep
        busy (measured since the constructor, style/cpuload.py), at least 1: with OpenMP's
        spin-waiting, 2 threads on a 2-core machine shared with other jobs were 3-4x slower than 1
        (580-980 vs 200 ms per 384x384 frame)."""
        if self.device.type != "cpu" or self.backend != "torch":
            return
        self._threads_before = torch.get_num_threads()  # the process's setting, back at on_predict_end
        if self.threads not in (None, "auto"):
            torch.set_num_threads(int(self.threads))
            return
        others = cpuload.others_busy_cores(self._cpu_since)
        if others is None:
            try:
                others = os.getloadavg()[0]
            except OSError:
                return
        cores = os.cpu_count() or 1
        n = max(1, min(_DEFAULT_THREADS, round(cores - others)))
        if n < _DEFAULT_THREADS:
            log.info(
                "CPU busy (other processes use %.1f of %d cores): stylizing with %d torch thread(s)", others, cores, n
            )
        torch.set_num_threads(n)

    def on_predict_start(self) -> None:
        self._set_threads()
        self._reset_stream()
        if self.backend == "torch" and self.device.type == "cpu":
            if self.compute_dtype == torch.float16:
                warnings.warn("model.precision=fp16 on CPU is slow; use fp32 or bf16", stacklevel=2)
            if self.use_compile:  # measured: minutes to compile, then 1.3-4x slower than eager (docs/style_video.md)
                warnings.warn("model.compile=true is slower than the eager path on CPU; leave it off", stacklevel=2)

    # --- the work
    def stylize_tensor(self, x: torch.Tensor, cuts: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, 3, H, W] float in [0, 1] (any H, W) -> stylized, same shape, float32."""
        if self.z is None and self.backend != "tfhub":
            self.set_style(x[:1])
        if self.backend == "tfhub" and self.ref is None:
            self.set_style(None)
        if self.backend != "torch":
            return self.ref.stylize(x) if self.backend == "tfhub" else self.ref.stylize(x, self.z)
        xp, (h, w) = pad_to_multiple(x, 4)
        xp = xp.to(self.transformer.contract_conv1.weight.dtype)  # (as prepared by set_style)
        if self.channels_last:
            xp = xp.contiguous(memory_format=torch.channels_last)
        temporal = self.temporal if self.temporal.active else None
        n = xp.shape[0]
        if self.use_compile:
            self._max_batch = max(getattr(self, "_max_batch", 0), n)
            if n < self._max_batch:  # same shape as the other batches: no recompilation
                extra = self._max_batch - n
                xp = torch.cat([xp, xp[-1:].expand(extra, -1, -1, -1)])
                if cuts is not None:
                    cuts = torch.cat([cuts, cuts.new_zeros(extra)])
        y = self._forward(self.transformer, xp, self.params, temporal, cuts)
        return y[:n, :, :h, :w].float()

    def _cuts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scene cuts [B] bool, frame changes [B]) of x against the previous frame."""
        change = frame_changes(x, self.prev_in)
        cuts = change > float(self.hparams.cut_threshold)
        if self.prev_in is None:
            cuts[0] = True
        return cuts.to(x.device), change

    def predict_step(self, batch: dict, batch_idx: int = 0, dataloader_idx: int = 0) -> StylizedBatch:
        t0 = time.perf_counter()
        frames = batch["frames"].to(self.device, non_blocking=True)  # uint8 [B, H, W, 3]
        x = frames.permute(0, 3, 1, 2).float().div_(255)
        cuts, change = self._cuts(x)  # the temporal state restarts at scene cuts
        flows = None
        if self.flow is not None:  # from the decoded (CPU) frames, whatever the device
            t = time.perf_counter()
            flows = self.flow.frames(batch["frames"].cpu().numpy(), cuts.tolist(), self.device)
            self.flow_s += time.perf_counter() - t
        y = self.stylize_tensor(x, cuts)
        y = self.filter(x, y, cuts, flows)
        self.prev_in = x[-1:]
        if self.hparams.measure_flicker:
            self.flicker.update(x, y, change)  # (the meter and prev_in are reset and advanced together)
        if self.warp_meter is not None:
            t = time.perf_counter()
            self.warp_meter.update(x, y, flows)
            self.warp_measure_s += time.perf_counter() - t
        self.n_frames += x.shape[0]
        self.compute_s += time.perf_counter() - t0
        return StylizedBatch(y, batch["pts"], batch["index"], frames)

    def _restore_threads(self) -> None:
        """The process's thread count from before _set_threads: a Python caller's is not changed for good."""
        if self._threads_before is not None:
            torch.set_num_threads(self._threads_before)
            self._threads_before = None

    def on_predict_end(self) -> None:
        self._restore_threads()
        res = {
            "frames": self.n_frames,
            "backend": self.backend,
            "style": str(self.style_path),
            "strength": self.strength,
        }
        if self.n_frames:
            res["ms_per_frame_model"] = round(1000 * self.compute_s / self.n_frames, 2)  # (all of predict_step)
            if self.flow is not None:
                res["ms_per_frame_flow"] = round(1000 * self.flow_s / self.n_frames, 2)
            if self.warp_meter is not None:
                res["ms_per_frame_warp_error"] = round(1000 * self.warp_measure_s / self.n_frames, 2)
        if self.device.type == "cpu":
            res["torch_threads"] = torch.get_num_threads()  # (threads=auto: what it chose)
        res.update({k: round(v, 5) for k, v in self.flicker.result().items()})
        if self.warp_meter is not None:
            res.update({k: round(v, 6) for k, v in self.warp_meter.result().items()})
        self.extra_results.update(res)

    def configure_optimizers(self):  # predict-only module
        return None

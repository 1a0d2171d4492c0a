"""Arbitrary style transfer of videos (paper sections 2.3, 2.5, 3.3.2), as a stream.

`StyleTransfer` (LightningModule, run by `trainer.predict`) stylizes batches of frames from
`hybridlearn.data.video.VideoFramesDataModule` with the fast arbitrary style network of
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
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import BasePredictionWriter

from hybridlearn.errors import ConfigError, DataError

log = logging.getLogger(__name__)
warnings.filterwarnings("ignore", message=".*infer the batch indices.*")

BACKENDS = ("torch", "tflite", "tfhub")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
STYLE_SIZE = 256
_DEFAULT_THREADS = torch.get_num_threads()


# ----------------------------------------------------------------------------- images
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
        raise DataError(f"{what} image {path} is not a readable image ({type(e).__name__}); give a PNG or JPEG file") from None
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


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [1, 3, H, W] in [0, 1]"""
    return torch.from_numpy(img).permute(2, 0, 1)[None].float().div_(255)


def style_input(img: np.ndarray | torch.Tensor, size: int = STYLE_SIZE) -> torch.Tensor:
    """Centre square crop, resized to size x size (antialiased): the predictor's input [1, 3, s, s]."""
    x = to_tensor(img) if isinstance(img, np.ndarray) else img.float()
    h, w = x.shape[-2:]
    m = min(h, w)
    top, left = (h - m) // 2, (w - m) // 2
    x = x[..., top: top + m, left: left + m]
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)


def pad_to_multiple(x: torch.Tensor, k: int = 4) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad [B, C, H, W] bottom / right (reflect, replicate when too small) to multiples of k."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % k, (-w) % k
    if ph or pw:
        mode = "reflect" if h > ph and w > pw else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


# ----------------------------------------------------------------------------- flicker
class FlickerMeter:
    """Temporal flicker: mean |S_t - S_{t-1}| of stylized frames over the same for input frames
    (1.0: output changes as much as the input; larger: the stylization adds flicker)."""

    def __init__(self) -> None:
        self.prev_x = self.prev_y = None
        self.sum_x = self.sum_y = 0.0
        self.pairs = 0

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """x, y: [B, 3, H, W] float in [0, 1], consecutive frames."""
        x, y = x.float(), y.float()
        if self.prev_x is not None:
            x = torch.cat([self.prev_x, x])
            y = torch.cat([self.prev_y, y])
        if x.shape[0] > 1:
            self.sum_x += (x[1:] - x[:-1]).abs().mean(dim=(1, 2, 3)).sum().item()
            self.sum_y += (y[1:] - y[:-1]).abs().mean(dim=(1, 2, 3)).sum().item()
            self.pairs += x.shape[0] - 1
        self.prev_x, self.prev_y = x[-1:].clone(), y[-1:].clone()

    def result(self) -> dict[str, float]:
        if not self.pairs:
            return {}
        dx, dy = self.sum_x / self.pairs, self.sum_y / self.pairs
        return {"flicker_input": dx, "flicker_output": dy, "flicker_ratio": dy / max(dx, 1e-12)}


# ----------------------------------------------------------------------------- module
class StylizedBatch:
    """What predict_step returns: a plain object (not a collection) so Lightning never copies
    or keeps the frames; the writer calls release() once they are encoded."""

    __slots__ = ("frames", "pts", "index", "source")

    def __init__(self, frames: torch.Tensor, pts: torch.Tensor, index: torch.Tensor, source: torch.Tensor | None):
        self.frames, self.pts, self.index, self.source = frames, pts, index, source

    def release(self) -> None:
        self.frames = self.source = None


class StyleTransfer(L.LightningModule):
    """Stylize frames with one style image (Ghiasi et al. 2017).

    style_image: path (as given, or under DATA_DIR/styles). strength in [0, 1]: blend of the style
    vector with the content's own (first frame's) style vector, as Magenta does. backend: torch |
    tflite | tfhub. precision: auto (fp16 on GPU, fp32 on CPU) | fp32 | fp16 | bf16.
    temporal_momentum: EMA factor of the instance-norm statistics over time (0 = per frame).
    temporal_blend: motion-gated blending with the previous stylized frame (0 = off); pixels whose
    input changed by more than blend_tau (in [0, 1]) are not blended. cut_threshold: a mean input
    change above it is a scene cut (resets both).
    """

    def __init__(
        self,
        style_image: str | None = None,
        data_dir: str | None = None,
        backend: str = "torch",
        strength: float = 1.0,
        models_dir: str | None = None,
        predict_file: str = "magenta_style_predict_int8.tflite",
        transfer_file: str = "magenta_style_transfer_fp16.tflite",
        weights: str | None = None,
        cache_dir: str | None = None,
        tfhub_handle: str = "https://tfhub.dev/google/magenta/arbitrary-image-stylization-v1-256/2",
        precision: str = "auto",
        channels_last: bool = False,
        compile: bool = False,
        threads: int | str | None = None,
        temporal_momentum: float = 0.0,
        temporal_blend: float = 0.0,
        blend_tau: float = 0.06,
        cut_threshold: float = 0.15,
        measure_flicker: bool = True,
    ):
        super().__init__()
        if backend not in BACKENDS:
            raise ConfigError(f"model.backend must be one of {', '.join(BACKENDS)} (got {backend!r})")
        if precision not in PRECISIONS:
            raise ConfigError(f"model.precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
        if not 0.0 <= float(strength) <= 1.0:
            raise ConfigError(f"model.strength must be in [0, 1] (got {strength})")
        for k, v in (("temporal_momentum", temporal_momentum), ("temporal_blend", temporal_blend)):
            if not 0.0 <= float(v) < 1.0:
                raise ConfigError(f"model.{k} must be in [0, 1) (got {v})")
        if backend == "tfhub" and float(strength) != 1.0:
            raise ConfigError("model.strength < 1 needs the style vector, which a TF Hub module hides: use backend=torch or tflite")
        if backend == "tfhub" and temporal_momentum > 0:
            raise ConfigError("model.temporal_momentum needs the instance-norm statistics: use backend=torch (or temporal_blend)")
        self.save_hyperparameters()
        from hybridlearn.data.video import resolve_path

        self.style_path = resolve_path(style_image, data_dir, "styles", "style")
        self.style_rgb = load_rgb(self.style_path, "style")  # fails early on a bad style image
        self.backend, self.strength = backend, float(strength)
        self.precision_mode, self.channels_last, self.use_compile = precision, bool(channels_last), bool(compile)
        self._net = None
        self.threads = threads
        models = Path(models_dir) if models_dir else (Path(data_dir) / "models" if data_dir else Path("models"))
        self.predict_file = Path(predict_file) if Path(predict_file).is_absolute() else models / predict_file
        self.transfer_file = Path(transfer_file) if Path(transfer_file).is_absolute() else models / transfer_file
        self.predictor = self.transformer = None
        self.ref = None
        if backend == "torch":
            self._build_torch(weights, cache_dir)
        self.extra_results: dict[str, Any] = {}
        self._reset_stream()

    # --- backends
    def _build_torch(self, weights, cache_dir) -> None:
        from hybridlearn.models.style_convert import cached_weights, load_weights
        from hybridlearn.models.style_nets import StylePredictor, StyleTransformer

        path = Path(weights).expanduser() if weights else cached_weights(self.predict_file, self.transfer_file, cache_dir)
        if not path.is_file():
            raise DataError(f"model.weights {path} not found; run python -m hybridlearn.models.style_convert --out {path}")
        payload = load_weights(path)
        self.predictor, self.transformer = StylePredictor().eval(), StyleTransformer().eval()
        self.predictor.load_state_dict(payload["predictor"])
        self.transformer.load_state_dict(payload["transformer"])
        for p in self.parameters():
            p.requires_grad_(False)
        self.weights_path = path

    def _build_reference(self) -> None:
        from hybridlearn.models import style_backends as sb

        if self.backend == "tflite":
            n = self.threads if isinstance(self.threads, int) else None
            self.ref = sb.TFLiteBackend(self.predict_file, self.transfer_file, n)
        else:
            self.ref = sb.TFHubBackend(self.hparams.tfhub_handle)

    def _reset_stream(self) -> None:
        from hybridlearn.models.style_nets import TemporalStats

        self.z = None
        self.params = None
        self.temporal = TemporalStats(float(self.hparams.temporal_momentum))
        self.prev_in = self.prev_out = None
        self.flicker = FlickerMeter()
        self.n_frames = 0
        self.compute_s = 0.0

    @property
    def compute_dtype(self) -> torch.dtype:
        p = self.precision_mode
        if p == "auto":
            return torch.float16 if self.device.type == "cuda" else torch.float32
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[p]

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
            with torch.inference_mode():  # (the transformer may already be fp16 from an earlier run)
                wdt = self.transformer.contract_conv1.weight.dtype
                self.params = {k: (b.float(), g.float()) for k, (b, g) in self.transformer.style_params(z.to(wdt)).items()}
            dt = self.compute_dtype
            if dt != torch.float32:
                self.transformer.to(dt)
            if self.channels_last:
                self.transformer.to(memory_format=torch.channels_last)
            self._net = self.transformer
            if self.use_compile:
                # static shapes: one compilation per frame size (the last batch is padded to full size)
                self._net = torch.compile(self.transformer, dynamic=False)

    def _set_threads(self) -> None:
        """threads: an int, or null/"auto": torch's default, but 1 when the CPU is already busy
        (load average >= cores): with OpenMP's spin-waiting, 2 threads on a shared 2-core machine
        were 3-4x slower than 1 (580-980 vs 200 ms per 384x384 frame)."""
        if self.device.type != "cpu" or self.backend != "torch":
            return
        if self.threads not in (None, "auto"):
            torch.set_num_threads(int(self.threads))
            return
        try:
            load, cores = os.getloadavg()[0], os.cpu_count() or 1
        except OSError:
            return
        if cores > 1 and load >= cores:
            log.info("CPU busy (load %.1f on %d cores): stylizing with 1 torch thread", load, cores)
            torch.set_num_threads(1)
        else:
            torch.set_num_threads(_DEFAULT_THREADS)

    def on_predict_start(self) -> None:
        self._set_threads()
        self._reset_stream()
        if self.backend == "torch" and self.compute_dtype != torch.float32 and self.device.type == "cpu" \
                and self.compute_dtype == torch.float16:
            warnings.warn("model.precision=fp16 on CPU is slow; use fp32 or bf16", stacklevel=2)

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
        xp = xp.to(self.compute_dtype)
        if self.channels_last:
            xp = xp.contiguous(memory_format=torch.channels_last)
        temporal = self.temporal if self.temporal.momentum > 0 else None
        n = xp.shape[0]
        if self.use_compile:
            self._max_batch = max(getattr(self, "_max_batch", 0), n)
            if n < self._max_batch:  # same shape as the other batches: no recompilation
                extra = self._max_batch - n
                xp = torch.cat([xp, xp[-1:].expand(extra, -1, -1, -1)])
                if cuts is not None:
                    cuts = torch.cat([cuts, cuts.new_zeros(extra)])
        y = self._net(xp, self.params, temporal, cuts)
        return y[:n, :, :h, :w].float()

    def _blend(self, x: torch.Tensor, y: torch.Tensor, cuts: torch.Tensor) -> torch.Tensor:
        """Motion-gated temporal blending with the previous output frame."""
        a, tau = float(self.hparams.temporal_blend), float(self.hparams.blend_tau)
        out = []
        for b in range(x.shape[0]):
            if self.prev_out is None or bool(cuts[b]):
                cur = y[b: b + 1]
            else:
                d = (x[b: b + 1] - self.prev_in).abs().mean(dim=1, keepdim=True)
                d = F.max_pool2d(d, 5, stride=1, padding=2)  # a moving edge un-gates its neighbourhood
                wgt = a * (1 - d / tau).clamp_(0, 1)
                cur = torch.lerp(y[b: b + 1], self.prev_out, wgt)
            out.append(cur)
            self.prev_in, self.prev_out = x[b: b + 1], cur
        return torch.cat(out)

    def _cuts(self, x: torch.Tensor) -> torch.Tensor:
        prev = self.prev_in if self.prev_in is not None else x[:1]
        seq = torch.cat([prev, x])
        change = (seq[1:] - seq[:-1]).abs().mean(dim=(1, 2, 3))
        cuts = change > float(self.hparams.cut_threshold)
        if self.prev_in is None:
            cuts[0] = True
        return cuts

    def predict_step(self, batch: dict, batch_idx: int = 0, dataloader_idx: int = 0) -> StylizedBatch:
        t0 = time.perf_counter()
        frames = batch["frames"].to(self.device, non_blocking=True)  # uint8 [B, H, W, 3]
        x = frames.permute(0, 3, 1, 2).float().div_(255)
        cuts = self._cuts(x)  # the temporal state restarts at scene cuts
        y = self.stylize_tensor(x, cuts)
        if self.hparams.temporal_blend > 0:
            y = self._blend(x, y, cuts)
        else:
            self.prev_in = x[-1:]
        if self.hparams.measure_flicker:
            self.flicker.update(x, y)
        self.n_frames += x.shape[0]
        self.compute_s += time.perf_counter() - t0
        return StylizedBatch(y, batch["pts"], batch["index"], frames)

    def on_predict_end(self) -> None:
        res = {"frames": self.n_frames, "backend": self.backend, "style": str(self.style_path),
               "strength": self.strength}
        if self.n_frames:
            res["ms_per_frame_model"] = round(1000 * self.compute_s / self.n_frames, 2)
        res.update({k: round(v, 5) for k, v in self.flicker.result().items()})
        self.extra_results.update(res)

    def configure_optimizers(self):  # predict-only module
        return None


# ----------------------------------------------------------------------------- writer
VIDEO_CODECS = {".mp4": "libx264", ".m4v": "libx264", ".mov": "libx264", ".mkv": "libx264",
                ".webm": "libvpx-vp9", ".avi": "mpeg4"}
AUDIO_COPY = {
    ".mp4": {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"},
    ".m4v": {"aac", "mp3", "alac", "ac3", "eac3"},
    ".mov": {"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s24le", "pcm_f32le"},
    ".mkv": None,  # anything
    ".webm": {"opus", "vorbis"},
    ".avi": {"mp3", "ac3", "pcm_s16le"},
}
AUDIO_ENCODERS = {".mp4": "aac", ".m4v": "aac", ".mov": "aac", ".mkv": "aac", ".webm": "libopus", ".avi": "libmp3lame"}
IMAGE_OUT = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def _to_uint8(y: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] float in [0, 1] -> uint8 [B, H, W, 3] (round to nearest)."""
    return y.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()


class StylizedVideoWriter(BasePredictionWriter):
    """Encode stylized frames at the source timestamps; copy the source audio; write atomically.

    output: file (.mp4/.mkv/.mov/.webm/.avi, or an image suffix for an image input); null ->
    <run dir>/stylized.<mp4|png>. The file appears only when complete (temp file + rename);
    an existing file is refused unless overwrite. preview: a PNG frame | style | stylized of frame
    `preview_frame` (true -> next to the output as <stem>_preview.png, or a path, or false).
    """

    def __init__(self, output: str | None = None, overwrite: bool = False, crf: int = 18,
                 preset: str = "veryfast", codec: str | None = None, audio: bool = True,
                 preview: bool | str = True, preview_frame: int = 0, progress: bool = True,
                 output_dir: str | None = None, encoder_threads: int = 0):
        super().__init__(write_interval="batch")
        self.output, self.overwrite, self.crf, self.preset = output, bool(overwrite), int(crf), preset
        self.codec, self.audio, self.preview, self.preview_frame = codec, bool(audio), preview, int(preview_frame)
        self.progress, self.output_dir, self.encoder_threads = progress, output_dir, int(encoder_threads)
        self._stack: ExitStack | None = None
        self._bar = None
        self.stats: dict[str, Any] = {}

    # --- paths
    def resolve_output(self, info, default_dir: str | os.PathLike | None) -> Path:
        if self.output in (None, "", "None"):
            base = Path(self.output_dir or default_dir or ".")
            out = base / ("stylized.png" if info.is_image else "stylized.mp4")
        else:
            out = Path(str(self.output)).expanduser()
        suf = out.suffix.lower()
        if info.is_image and suf not in IMAGE_OUT:
            raise ConfigError(f"output {out}: the input is an image, so give an image output (.png or .jpg)")
        if not info.is_image and suf not in VIDEO_CODECS:
            raise ConfigError(f"output {out}: unsupported suffix for a video; use one of {', '.join(sorted(VIDEO_CODECS))}")
        if out.resolve() == Path(info.path).resolve():
            raise ConfigError(f"output {out} is the input file; choose another output path")
        if out.exists() and not self.overwrite:
            raise ConfigError(f"output {out} already exists; pass overwrite=true or choose another output path")
        return out

    # --- lifecycle
    def on_predict_start(self, trainer, pl_module) -> None:
        from hybridlearn.utils.io import atomic_output

        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "prepare"):
            raise ConfigError("StylizedVideoWriter needs data=video (VideoFramesDataModule)")
        self.info = info = dm.prepare()
        self.out_path = self.resolve_output(info, trainer.default_root_dir)
        self._stack = ExitStack()
        self.tmp = self._stack.enter_context(atomic_output(self.out_path, overwrite=self.overwrite))
        self.written = 0
        self._last_pts = None
        self.audio_packets = 0
        self.audio_mode = "none"
        self._preview_done = not self.preview
        self._t0 = time.perf_counter()
        self._bar = None
        if self.progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=dm.expected_frames, unit="frame", desc=f"stylize {info.path.name}",
                             dynamic_ncols=True, leave=True)
        if info.is_image:
            self.container = None
            return
        self._open_video(info)

    def _open_video(self, info) -> None:
        import av

        suf = self.out_path.suffix.lower()
        self.container = self._stack.enter_context(av.open(str(self.tmp), mode="w"))
        codec = self.codec or VIDEO_CODECS[suf]
        try:
            av.codec.Codec(codec, "w")
        except Exception:  # noqa: BLE001
            log.warning("encoder %s not available in this FFmpeg build, using mpeg4", codec)
            codec = "mpeg4"
        w, h = info.out_width, info.out_height
        self.enc_w, self.enc_h = w - w % 2, h - h % 2
        if (self.enc_w, self.enc_h) != (w, h):
            warnings.warn(f"{info.path}: odd frame size {w}x{h}; encoding {self.enc_w}x{self.enc_h} "
                          "(yuv420p needs even sizes), the last row/column is dropped", stacklevel=2)
        opts = {}
        if codec in ("libx264", "libx265"):
            opts = {"crf": str(self.crf), "preset": self.preset}
        elif codec.startswith("libvpx"):
            opts = {"crf": str(self.crf + 13), "b": "0", "deadline": "realtime", "cpu-used": "8"}
        vs = self.container.add_stream(codec, rate=info.fps, options=opts)
        vs.width, vs.height, vs.pix_fmt = self.enc_w, self.enc_h, "yuv420p"
        vs.time_base = info.time_base
        vs.codec_context.time_base = info.time_base
        if self.encoder_threads:
            vs.codec_context.thread_count = self.encoder_threads
        if codec == "mpeg4":
            vs.bit_rate = 4_000_000
        self.vstream = vs
        self.ain = None
        if not info.has_audio:
            log.info("%s has no audio stream: writing video only", info.path)
            return
        if not self.audio:
            log.info("writer.audio=false: dropping the audio of %s", info.path)
            return
        self.ain = self._stack.enter_context(av.open(str(info.path), mode="r"))
        a_in = self.ain.streams.audio[0]
        allowed = AUDIO_COPY[suf]
        if allowed is None or a_in.codec_context.name in allowed:
            self.astream = self.container.add_stream_from_template(a_in)
            self.audio_mode = "copy"
        else:
            import av as _av

            enc = AUDIO_ENCODERS[suf]
            cc = a_in.codec_context
            layout = "mono" if cc.layout is not None and cc.layout.nb_channels == 1 else "stereo"
            fmt = _av.codec.Codec(enc, "w").audio_formats[0].name
            rate = cc.sample_rate or 48000
            if enc == "libopus" and rate not in (8000, 12000, 16000, 24000, 48000):
                rate = 48000
            self.astream = self.container.add_stream(enc, rate=rate, layout=layout, format=fmt)
            self.audio_mode = f"re-encode {a_in.codec_context.name}->{enc}"
            log.info("audio %s cannot be copied into %s: re-encoding to %s", a_in.codec_context.name, suf, enc)
        self._apackets = self.ain.demux(a_in)
        self._pending_audio = None
        self._audio_done = False

    def _mux_audio_until(self, t_s: float | None) -> None:
        """Copy (or re-encode) source audio packets that start before t_s seconds (None: all)."""
        import av

        if self.ain is None or self._audio_done:
            return
        while True:
            pkt = self._pending_audio
            if pkt is None:
                try:
                    pkt = next(self._apackets)
                except (StopIteration, av.FFmpegError, EOFError):
                    self._audio_done = True
                    self._pending_audio = None
                    if self.audio_mode.startswith("re-encode"):
                        for p in self.astream.encode(None):
                            self.container.mux(p)
                    return
                if pkt.dts is None and pkt.size == 0:  # demuxer flush packet
                    continue
            if t_s is not None and pkt.pts is not None and float(pkt.pts * pkt.time_base) >= t_s:
                self._pending_audio = pkt
                return
            self._pending_audio = None
            if self.audio_mode == "copy":
                pkt.stream = self.astream
                self.container.mux(pkt)
                self.audio_packets += 1
            else:
                for fr in pkt.decode():
                    fr.pts = None
                    for p in self.astream.encode(fr):
                        self.container.mux(p)
                self.audio_packets += 1

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        import av

        if not isinstance(prediction, StylizedBatch) or prediction.frames is None:
            return
        frames = _to_uint8(prediction.frames)
        pts = prediction.pts.tolist()
        index = prediction.index.tolist()
        if not self._preview_done and self.preview_frame in index:
            k = index.index(self.preview_frame)
            src = prediction.source[k].cpu().numpy() if prediction.source is not None else None
            self._write_preview(src, frames[k], pl_module)
        if self.info.is_image:
            self._write_image(frames[0])
        else:
            tb = self.info.time_base
            for arr, p in zip(frames, pts):
                if (self.enc_w, self.enc_h) != (arr.shape[1], arr.shape[0]):
                    arr = arr[: self.enc_h, : self.enc_w]
                fr = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
                fr.pts, fr.time_base = int(p), tb
                for packet in self.vstream.encode(fr):
                    self.container.mux(packet)
                self._mux_audio_until(float(p * tb))
                self._last_pts = int(p)
        self.written += len(frames)
        prediction.release()
        if self._bar is not None:
            self._bar.update(len(frames))

    def _write_image(self, arr: np.ndarray) -> None:
        from PIL import Image

        Image.fromarray(arr).save(self.tmp)

    def _write_preview(self, src: np.ndarray | None, out: np.ndarray, pl_module) -> None:
        from PIL import Image

        from hybridlearn.utils.io import atomic_output

        self._preview_done = True
        h = out.shape[0]
        style = Image.fromarray(pl_module.style_rgb)
        style = style.resize((max(1, round(style.width * h / style.height)), h), Image.LANCZOS)
        panels = ([Image.fromarray(src).resize((out.shape[1], h))] if src is not None else []) + [style, Image.fromarray(out)]
        canvas = Image.new("RGB", (sum(p.width for p in panels) + 8 * (len(panels) - 1), h), (255, 255, 255))
        x = 0
        for p in panels:
            canvas.paste(p, (x, 0))
            x += p.width + 8
        if isinstance(self.preview, str) and self.preview not in ("true", "True"):
            path = Path(self.preview)
        else:
            path = self.out_path.with_name(f"{self.out_path.stem}_preview.png")
        with atomic_output(path, overwrite=True) as tmp:
            canvas.save(tmp, format="PNG")
        self.preview_path = path
        log.info("preview: %s", path)

    def on_predict_end(self, trainer, pl_module) -> None:
        if self._stack is None:
            return
        if self.container is not None:
            for packet in self.vstream.encode(None):
                self.container.mux(packet)
            if self.written:
                self._mux_audio_until(self._audio_end_s(trainer))
        if self.written == 0:
            err = DataError(f"{self.info.path}: no frame could be decoded; nothing was written (is the file damaged?)")
            self._abort(err)
            raise err
        stack, self._stack = self._stack, None
        stack.close()  # closes the containers, then renames the temp file onto the output
        if self._bar is not None:
            self._bar.close()
        wall = time.perf_counter() - self._t0
        self.stats = {"output": str(self.out_path), "frames_written": self.written,
                      "audio": self.audio_mode, "audio_packets": self.audio_packets,
                      "fps_pipeline": round(self.written / max(wall, 1e-9), 3)}
        if getattr(self, "preview_path", None):
            self.stats["preview"] = str(self.preview_path)
        if hasattr(pl_module, "extra_results"):
            pl_module.extra_results.update(self.stats)
            pl_module.extra_results["truncated_input"] = bool(getattr(trainer.datamodule.dataset, "truncated", False))
        log.info("wrote %s (%d frames, audio: %s, %.2f frames/s)", self.out_path, self.written,
                 self.audio_mode, self.stats["fps_pipeline"])

    def _audio_end_s(self, trainer) -> float | None:
        """All the audio for a complete video; up to the end of the last frame when the video was
        cut short (truncated file, data.max_frames)."""
        dm = trainer.datamodule
        cut = bool(getattr(dm.dataset, "truncated", False)) or getattr(dm, "max_frames", None) is not None
        if not cut or self._last_pts is None:
            return None
        return float((self._last_pts * self.info.time_base) + 1 / self.info.fps)

    def _abort(self, exc: BaseException) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            try:
                stack.__exit__(type(exc), exc, exc.__traceback__)
            except BaseException:  # noqa: BLE001 - the original exception is what matters
                pass
        if self._bar is not None:
            self._bar.close()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._abort(exception)


# ----------------------------------------------------------------------------- python API
def stylize(input: str | os.PathLike, style: str | os.PathLike, output: str | os.PathLike | None = None,
            overwrite: bool = False, data: dict | None = None, model: dict | None = None,
            writer: dict | None = None, accelerator: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Stylize a video (or an image) file; returns the run's results (frames, flicker, fps...)."""
    data_dir = os.environ.get("DATA_DIR")
    dm = __import__("hybridlearn.data.video", fromlist=["VideoFramesDataModule"]).VideoFramesDataModule(
        path=str(input), data_dir=data_dir, **(data or {}))
    module = StyleTransfer(style_image=str(style), data_dir=data_dir, **(model or {}))
    w = StylizedVideoWriter(**{"output": None if output is None else str(output), "overwrite": overwrite,
                               "progress": progress, **(writer or {})})
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, callbacks=[w],
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        default_root_dir=str(Path(output).parent) if output else ".")
    trainer.predict(module, datamodule=dm, return_predictions=False)
    return dict(module.extra_results)

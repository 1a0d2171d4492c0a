"""The style experiments' settings (core.settings): each config group option as a dataclass that holds
every key's type, default, range and help; registered through the `hybridlearn.settings` entry point.

`model=style_transfer` is StyleTransferConfig (hybridlearn.style.model.StyleTransfer), `data=video`
VideoDataConfig (hybridlearn.style.video.VideoFramesDataModule) and `callbacks=style_writer`
StyleWriterConfig (`callbacks.style_writer`, hybridlearn.style.writer.StylizedVideoWriter). The
command's own keys (input, style, output, overwrite) are the run's (core/conf.py RunConfig).
Torch-free: read before torch is imported."""

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import DictConfig

from hybridlearn.core.errors import ConfigError
from hybridlearn.core.settings import positive_int_or, setting
from hybridlearn.core.settings import register as register_option

MANY = 10**9  # the upper bound where there is no real one (frames, queue lengths, threads)
BACKENDS = ("torch", "tflite", "tfhub")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DIS_PRESETS = ("ultrafast", "fast", "medium")  # OpenCV's DIS optical flow (style/flow.py)
# swscale's filters, by PyAV's names (av.video.reformatter.Interpolation)
INTERPOLATIONS = ("FAST_BILINEAR", "BILINEAR", "BICUBIC", "X", "POINT", "AREA", "BICUBLIN", "GAUSS", "SINC", "LANCZOS")
X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)


def _auto_or_bool(v: Any) -> str | None:
    return None if isinstance(v, bool) or v == "auto" else "must be true, false or auto"


def _frame_size(v: Any) -> str | None:
    ok = len(v) == 2 and all(isinstance(s, int) and not isinstance(s, bool) and s >= 4 for s in v)
    return None if ok else "must be [height, width], both integers >= 4"


def _preview(v: Any) -> str | None:
    return None if isinstance(v, (bool, str)) else "must be true, false or the path of a PNG"


# ------------------------------------------------------------------------------------ data
@dataclass
class VideoDataConfig:
    """Frames of one video (or image) streamed with PyAV for trainer.predict (style transfer). Known
    files missing from data_dir (the demo clip here, the style images and Magenta models in model.*)
    are downloaded, md5-checked: first from the `mirrors` laid out like data_dir (<base>/video/<file>,
    <base>/styles/<file>, <base>/models/<file>), then from their public sources."""

    _target_: str = "hybridlearn.style.video.VideoFramesDataModule"
    data_dir: str = "${paths.data_dir}"
    path: Optional[str] = setting(
        "${oc.select:input,null}", help="the file, as given or under ${paths.data_dir}/video (the run's `input`)"
    )
    batch_size: int = setting(4, ge=1, le=MANY, help="frames per forward pass")
    max_side: Optional[int] = setting(
        None, ge=4, le=1 << 16, help="shrink frames so the longer side is at most this (aspect kept); null: source size"
    )
    size: Optional[list[int]] = setting(
        None, check=_frame_size, help="or force [height, width] (e.g. [384, 384], the TF Lite size)"
    )
    max_frames: Optional[int] = setting(None, ge=1, le=MANY, help="only the first N frames (quick looks)")
    # a second worker would decode the same frames again
    num_workers: int = setting(0, ge=0, le=1, help="0, or 1 to decode in a worker process in parallel with the model")
    prefetch: int = setting(
        2, ge=0, le=MANY, help="batches a decode thread reads ahead of the model (0: decode in the main thread)"
    )
    decode_threads: int = setting(
        1, ge=0, le=MANY, help="FFmpeg decoder threads (0: FFmpeg's choice); more take CPU from the model on few cores"
    )
    interpolation: str = setting("AREA", choices=INTERPOLATIONS, help="swscale filter when resizing")
    mirrors: Any = setting(
        "${oc.env:HYBRIDLEARN_DATA_MIRROR,null}", help="data mirrors: a list, or one string of space-separated URLs"
    )
    download_timeout: Optional[float] = setting(
        None, gt=0, help="seconds for all downloads of one file set; null: $HYBRIDLEARN_DOWNLOAD_TIMEOUT or 60"
    )


# ----------------------------------------------------------------------------------- model
@dataclass
class StyleTransferConfig:
    """Fast arbitrary style transfer (Ghiasi et al. 2017; Magenta arbitrary-image-stylization-v1-256)
    of the frames, one style image; docs/style_video.md explains every option."""

    _target_: str = "hybridlearn.style.model.StyleTransfer"
    style_image: Optional[str] = setting(
        "${oc.select:style,null}",
        help="as given, an http(s) URL, or under ${paths.data_dir}/styles (the run's `style`)",
    )
    data_dir: Optional[str] = "${paths.data_dir}"
    backend: str = setting(
        "torch",
        choices=BACKENDS,
        help="torch (PyTorch port) | tflite (TF Lite reference) | tfhub (TF Hub SavedModel); the last two need "
        "pip install -e .[tf]",
    )
    strength: float = setting(
        1.0, ge=0, le=1, help="blend of the style vector with the content's own (Magenta's 'style ratio')"
    )
    models_dir: Optional[str] = setting(None, help="folder of the .tflite files; null: ${paths.data_dir}/models")
    predict_file: str = "magenta_style_predict_int8.tflite"
    transfer_file: str = setting("magenta_style_transfer_fp16.tflite", help="or magenta_style_transfer_int8.tflite")
    weights: Optional[str] = setting(None, help="converted .pt; null: converted once into cache_dir")
    cache_dir: Optional[str] = "${paths.cache_dir}/style"
    tfhub_handle: str = setting(
        "https://tfhub.dev/google/magenta/arbitrary-image-stylization-v1-256/2", help="or a local SavedModel folder"
    )
    precision: str = setting(
        "auto",
        choices=PRECISIONS,
        help="auto: fp16 on GPU, bf16 on CPUs with native bf16 (AVX512_BF16 / AMX; 44 dB PSNR vs fp32), else fp32",
    )
    channels_last: Any = setting(
        "auto",
        check=_auto_or_bool,
        help="auto: true on CPU (oneDNN convs with 3-32 channels are much faster in NHWC)",
    )
    fused_norm: bool = setting(
        True,
        help="style/fused.py: instance norms as one group_norm + in-place ReLU (fp32: same output to 1e-6); "
        "false: the reference (style/nets.py)",
    )
    subpixel: bool = setting(
        True,
        help="with fused_norm: style/subpixel.py, the full-resolution 8-channel layers on the space-to-depth "
        "form (same math)",
    )
    compile: bool = setting(False, help="torch.compile the transformer: slower than eager on CPU (minutes to compile)")
    threads: Any = setting(
        "auto",
        check=positive_int_or("auto"),
        help="torch CPU threads; auto: torch's default, less the cores other processes keep busy",
    )
    temporal_momentum: float = setting(
        0.0, ge=0, lt=1, help="EMA of the instance-norm statistics over frames (0: off; 0.9: smooth)"
    )
    temporal_blend: float = setting(
        0.0, ge=0, lt=1, help="motion-gated blend with the previous stylized frame (0: off; 0.6: smooth)"
    )
    blend_tau: float = setting(0.06, gt=0, le=1, help="input change (0..1) above which a pixel is not blended")
    temporal_flow: float = setting(
        0.0,
        ge=0,
        lt=1,
        help="motion-compensated: weight of the previous stylized frame warped by the input's optical flow "
        "(0: off; 0.6: smooth)",
    )
    flow_tau: float = setting(
        0.1, gt=0, le=1, help="warped input mismatch (0..1) above which a pixel takes nothing from the previous frame"
    )
    cut_threshold: float = setting(
        0.15, gt=0, le=1, help="mean input change above which a frame starts a new scene (the temporal options restart)"
    )
    measure_flicker: bool = setting(True, help="flicker ratio in results.json")
    measure_warp: bool = setting(
        True, help="warped temporal error (Lai et al. 2018) of output and input in results.json (needs the flow)"
    )
    flow_max_side: Optional[int] = setting(
        256, ge=16, le=1 << 16, help="optical flow (DIS) on frames shrunk to this longer side; null: full size (slow)"
    )
    flow_preset: str = setting("fast", choices=DIS_PRESETS, help="DIS preset")
    # the experiment sets them to data.mirrors / data.download_timeout (style images, Magenta files)
    mirrors: Any = setting(None, help="data mirrors for the style image and the Magenta files (as data.mirrors)")
    download_timeout: Optional[float] = setting(None, gt=0, help="seconds for all downloads of one file set")

    @staticmethod
    def rules(node: DictConfig, path: str, root: DictConfig) -> None:
        # a TF Hub module is one opaque function: no style vector to blend, no statistics to smooth
        if node.backend != "tfhub":
            return
        if node.strength != 1.0:
            raise ConfigError(
                f"{path}.strength < 1 needs the style vector, which a TF Hub module hides: use {path}.backend=torch "
                "or tflite"
            )
        if node.temporal_momentum > 0:
            raise ConfigError(
                f"{path}.temporal_momentum needs the instance-norm statistics: use {path}.backend=torch "
                "(or temporal_blend)"
            )


# ------------------------------------------------------------------------------- callbacks
@dataclass
class StyleWriterConfig:
    """Encodes the stylized frames at the source timestamps with PyAV, copies the source audio, and writes
    the output atomically (hybridlearn.style.writer.StylizedVideoWriter)."""

    _target_: str = "hybridlearn.style.writer.StylizedVideoWriter"
    output: Optional[str] = setting("${output}", help="the run's `output`; null: <run dir>/stylized.mp4 (.png)")
    overwrite: bool = setting("${overwrite}", help="the run's `overwrite`: replace an existing output")
    output_dir: Optional[str] = "${paths.output_dir}"
    crf: int = setting(18, ge=0, le=51, help="x264 quality (lower: better, bigger; VP9 gets crf + 13)")
    preset: str = setting(
        "ultrafast",
        choices=X264_PRESETS,
        help="x264's: ultrafast takes 1/4 of veryfast's CPU at the same PSNR, 25-40% larger files",
    )
    encoder_threads: int = setting(
        1, ge=0, le=MANY, help="x264 threads (0: x264's choice); more take CPU from the model on few cores"
    )
    codec: Optional[str] = setting(None, help="null: by output suffix (libx264 for .mp4/.mkv/.mov)")
    audio: bool = setting(True, help="copy the source audio (packet for packet when the container allows)")
    preview: Any = setting(
        True,
        check=_preview,
        help="<output stem>_preview.png: frame | style | stylized, or a path (never overwritten unless overwrite)",
    )
    preview_frame: int = setting(0, ge=0, le=MANY)
    progress: bool = setting(True, help="frames/s progress bar")
    encode_queue: int = setting(
        2, ge=0, le=MANY, help="batches waiting for the encode thread (0: encode in the main thread)"
    )


def register() -> None:
    """Store this package's config group options in Hydra's ConfigStore."""
    register_option("data", "video", VideoDataConfig)
    register_option("model", "style_transfer", StyleTransferConfig)
    register_option("callbacks", "style_writer", {"style_writer": StyleWriterConfig})

"""`StylizedVideoWriter`: a BasePredictionWriter that encodes the stylized frames with PyAV at the
source timestamps, copies the source audio packet for packet, and writes atomically. Encoding
(and the audio copy) runs in a thread behind the model (style/pipeline.py)."""

from __future__ import annotations

import logging
import os
import time
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter

from hybridlearn.core.errors import ConfigError, DataError
from hybridlearn.core.io import atomic_output
from hybridlearn.style.frames import to_uint8_rgb, to_yuv420p
from hybridlearn.style.model import StylizedBatch
from hybridlearn.style.pipeline import BackgroundWorker

log = logging.getLogger(__name__)

VIDEO_CODECS = {
    ".mp4": "libx264",
    ".m4v": "libx264",
    ".mov": "libx264",
    ".mkv": "libx264",
    ".webm": "libvpx-vp9",
    ".avi": "mpeg4",
}


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


def process_age_s() -> float | None:
    """Seconds since this process started (Linux /proc; None elsewhere)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return round(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 3)
    except (OSError, ValueError, IndexError):
        return None


class StylizedVideoWriter(BasePredictionWriter):
    """Encode stylized frames at the source timestamps; copy the source audio; write atomically.

    output: file (.mp4/.mkv/.mov/.webm/.avi, or an image suffix for an image input); null ->
    <run dir>/stylized.<mp4|png>. The file appears only when complete (temp file + rename);
    an existing file is refused unless overwrite. preview: a PNG frame | style | stylized of frame
    `preview_frame` (true -> next to the output as <stem>_preview.png, or a path, or false).
    encode_queue: batches that may wait for the encode thread (0: encode in the main thread).
    preset / encoder_threads: x264's; ultrafast on one thread takes a quarter of veryfast's CPU,
    which on few cores is taken from the model (docs/style_video.md: same PSNR, larger file).
    Every argument is a setting of StyleWriterConfig (style/conf.py: default, range, help).
    """

    def __init__(
        self,
        output: str | None,
        overwrite: bool,
        crf: int,
        preset: str,
        codec: str | None,
        audio: bool,
        preview: bool | str,
        preview_frame: int,
        progress: bool,
        output_dir: str | None,
        encoder_threads: int,
        encode_queue: int,
    ):
        super().__init__(write_interval="batch")
        self.output, self.overwrite, self.crf, self.preset = output, bool(overwrite), int(crf), preset
        self.codec, self.audio, self.preview, self.preview_frame = codec, bool(audio), preview, int(preview_frame)
        self.progress, self.output_dir = progress, output_dir
        self.encoder_threads, self.encode_queue = int(encoder_threads), int(encode_queue)
        self._encoder: BackgroundWorker | None = None
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
            raise ConfigError(
                f"output {out}: unsupported suffix for a video; use one of {', '.join(sorted(VIDEO_CODECS))}"
            )
        if out.resolve() == Path(info.path).resolve():
            raise ConfigError(f"output {out} is the input file; choose another output path")
        if out.exists() and not self.overwrite:
            raise ConfigError(f"output {out} already exists; pass overwrite=true or choose another output path")
        return out

    def resolve_preview(self) -> Path | None:
        """<output stem>_preview.png, or the `preview` path; an existing file is refused unless overwrite."""
        if not self.preview or str(self.preview) in ("false", "False"):
            return None
        if isinstance(self.preview, str) and self.preview not in ("true", "True"):
            path = Path(self.preview).expanduser()
        else:
            path = self.out_path.with_name(f"{self.out_path.stem}_preview.png")
        if path.resolve() in (self.out_path.resolve(), Path(self.info.path).resolve()):
            raise ConfigError(
                f"preview {path} is the output or the input file; set callbacks.style_writer.preview to another path"
            )
        if path.exists() and not self.overwrite:
            raise ConfigError(
                f"preview {path} already exists; pass overwrite=true, choose another output path "
                "or set callbacks.style_writer.preview=false"
            )
        return path

    # --- lifecycle
    def on_predict_start(self, trainer, pl_module) -> None:
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "prepare"):
            raise ConfigError("StylizedVideoWriter needs data=video (VideoFramesDataModule)")
        self.info = info = dm.prepare()
        self.out_path = self.resolve_output(info, trainer.default_root_dir)
        self.preview_path = self.resolve_preview()
        self._preview_img = None  # written after the output, so an interrupted run leaves neither
        self._stack = ExitStack()
        self.tmp = self._stack.enter_context(atomic_output(self.out_path, overwrite=self.overwrite))
        self.written = 0
        self._last_pts = None
        self.audio_packets = 0
        self.audio_mode = "none"
        self._preview_done = self.preview_path is None
        self._t0 = time.perf_counter()
        self._bar = None
        self.container = None
        self.first_frame_s: float | None = None  # since the process started (what a user waits)
        self.startup_s = process_age_s()
        if not info.is_image:
            self._open_video(info)  # (its warnings come before the progress bar)
            self._encoder = BackgroundWorker(self._encode_batch, self.encode_queue, "encode")
        if self.progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=dm.expected_frames, unit="frame", desc=f"stylize {info.path.name}", dynamic_ncols=True, leave=True
            )
            # a warning printed now would land inside the bar's line: keep it until the bar is closed
            # (a worker process has its own copy of the stream, so it warns by itself)
            if dm.dataset is not None and not getattr(dm, "num_workers", 0):
                dm.dataset.defer_warnings = True

    def _open_video(self, info) -> None:
        import av

        self.container = self._stack.enter_context(av.open(str(self.tmp), mode="w"))
        self.vstream = self._add_video_stream(info, self._video_codec())
        self.ain = None
        if not info.has_audio:
            log.info("%s has no audio stream: writing video only", info.path)
            return
        if not self.audio:
            log.info("writer.audio=false: dropping the audio of %s", info.path)
            return
        self._open_audio(info)

    def _video_codec(self) -> str:
        """writer.codec, else the output suffix's; mpeg4 when this FFmpeg build lacks that encoder."""
        import av

        codec = self.codec or VIDEO_CODECS[self.out_path.suffix.lower()]
        try:
            av.codec.Codec(codec, "w")
        except Exception:  # noqa: BLE001
            log.warning("encoder %s not available in this FFmpeg build, using mpeg4", codec)
            codec = "mpeg4"
        return codec

    def _add_video_stream(self, info, codec: str):
        w, h = info.out_width, info.out_height
        self.enc_w, self.enc_h = w - w % 2, h - h % 2
        if (self.enc_w, self.enc_h) != (w, h):
            warnings.warn(
                f"{info.path}: odd frame size {w}x{h}; encoding {self.enc_w}x{self.enc_h} "
                "(yuv420p needs even sizes), the last row/column is dropped",
                stacklevel=3,
            )
        opts = {}
        if codec in ("libx264", "libx265"):
            opts = {"crf": str(self.crf), "preset": self.preset}
        elif codec.startswith("libvpx"):
            opts = {"crf": str(self.crf + 13), "b": "0", "deadline": "realtime", "cpu-used": "8"}
        vs = self.container.add_stream(codec, rate=info.fps, options=opts)
        vs.width, vs.height, vs.pix_fmt = self.enc_w, self.enc_h, "yuv420p"
        vs.time_base = info.time_base
        vs.codec_context.time_base = info.time_base
        vs.codec_context.thread_count = self.encoder_threads  # 0: the encoder's own choice
        if codec == "mpeg4":
            vs.bit_rate = 4_000_000
        return vs

    def _open_audio(self, info) -> None:
        """The source audio: copied packet for packet when the output container takes its codec,
        else re-encoded to the container's usual one."""
        import av

        suf = self.out_path.suffix.lower()
        self.ain = self._stack.enter_context(av.open(str(info.path), mode="r"))
        a_in = self.ain.streams.audio[0]
        allowed = AUDIO_COPY[suf]
        if allowed is None or a_in.codec_context.name in allowed:
            self.astream = self.container.add_stream_from_template(a_in)
            self.audio_mode = "copy"
        else:
            enc = AUDIO_ENCODERS[suf]
            cc = a_in.codec_context
            layout = "mono" if cc.layout is not None and cc.layout.nb_channels == 1 else "stereo"
            fmt = av.codec.Codec(enc, "w").audio_formats[0].name
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
        if not isinstance(prediction, StylizedBatch) or prediction.frames is None:
            return
        y = prediction.frames
        pts = prediction.pts.tolist()
        index = prediction.index.tolist()
        if not self._preview_done and self.preview_frame in index:
            k = index.index(self.preview_frame)
            src = prediction.source[k].cpu().numpy() if prediction.source is not None else None
            self._write_preview(src, to_uint8_rgb(y[k : k + 1])[0], pl_module)
        if self.info.is_image:
            self._write_image(to_uint8_rgb(y[:1])[0])
            self._first_frame()
        else:  # yuv420p here, on the model's threads: the encode thread only runs x264 (style/frames.py)
            self._encoder.submit((to_yuv420p(y[..., : self.enc_h, : self.enc_w]), pts))
        self.written += len(pts)
        prediction.release()
        if self._bar is not None:
            self._bar.update(len(pts))

    def _first_frame(self) -> None:
        if self.first_frame_s is None:
            self.first_frame_s = process_age_s()

    def _encode_batch(self, item: tuple[np.ndarray, list[int]]) -> None:
        """Encode one batch of yuv420p frames [B, H * 3 // 2, W] (in the encode thread) and the
        audio up to its end."""
        import av

        frames, pts = item
        tb = self.info.time_base
        for arr, p in zip(frames, pts):
            fr = av.VideoFrame.from_ndarray(arr, format="yuv420p")
            fr.pts, fr.time_base = int(p), tb
            for packet in self.vstream.encode(fr):
                self.container.mux(packet)
            self._first_frame()
            self._mux_audio_until(float(p * tb))
            self._last_pts = int(p)

    def _write_image(self, arr: np.ndarray) -> None:
        from PIL import Image

        Image.fromarray(arr).save(self.tmp)

    def _write_preview(self, src: np.ndarray | None, out: np.ndarray, pl_module) -> None:
        """Compose the preview now (the frames are at hand); it is saved with the output at the end."""
        from PIL import Image

        self._preview_done = True
        h = out.shape[0]
        style = Image.fromarray(pl_module.style_rgb)
        style = style.resize((max(1, round(style.width * h / style.height)), h), Image.LANCZOS)
        panels = ([Image.fromarray(src).resize((out.shape[1], h))] if src is not None else []) + [
            style,
            Image.fromarray(out),
        ]
        canvas = Image.new("RGB", (sum(p.width for p in panels) + 8 * (len(panels) - 1), h), (255, 255, 255))
        x = 0
        for p in panels:
            canvas.paste(p, (x, 0))
            x += p.width + 8
        self._preview_img = canvas

    def on_predict_end(self, trainer, pl_module) -> None:
        if self._stack is None:
            return
        self._finish_output(trainer)
        self._save_preview()
        self.stats = self._run_stats(pl_module)
        if hasattr(pl_module, "extra_results"):
            pl_module.extra_results.update(self.stats)
            pl_module.extra_results["truncated_input"] = bool(getattr(trainer.datamodule.dataset, "truncated", False))
        log.info(
            "wrote %s (%d frames, audio: %s, %.2f frames/s)",
            self.out_path,
            self.written,
            self.audio_mode,
            self.stats["fps_pipeline"],
        )

    def _finish_output(self, trainer) -> None:
        """Drain the encode thread and the encoder, add the rest of the audio, and rename the temp
        file onto the output; a stream of which no frame decoded writes nothing."""
        if self._encoder is not None:
            encoder, self._encoder = self._encoder, None
            try:
                encoder.finish()
            except BaseException as e:
                self._abort(e)
                raise
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
            self._bar = None
        for msg in getattr(trainer.datamodule.dataset, "pending_warnings", ()):
            warnings.warn(msg, stacklevel=3)

    def _save_preview(self) -> None:
        if self._preview_img is None:
            self.preview_path = None
            return
        try:
            with atomic_output(self.preview_path, overwrite=self.overwrite) as tmp:
                self._preview_img.save(tmp, format="PNG")
        except BaseException:
            self.out_path.unlink(missing_ok=True)  # all or nothing
            raise
        log.info("preview: %s", self.preview_path)

    def _run_stats(self, pl_module) -> dict[str, Any]:
        wall = time.perf_counter() - self._t0
        stats = {
            "output": str(self.out_path),
            "frames_written": self.written,
            "audio": self.audio_mode,
            "audio_packets": self.audio_packets,
            "fps_pipeline": round(self.written / max(wall, 1e-9), 3),
        }
        # the model's own speed in the same run (its forward passes only), and how close the pipeline is
        model_s, model_frames = getattr(pl_module, "compute_s", 0.0), getattr(pl_module, "n_frames", 0)
        if model_s > 0 and model_frames:
            stats["fps_model"] = round(model_frames / model_s, 3)
            stats["pipeline_vs_model"] = round(stats["fps_pipeline"] / stats["fps_model"], 3)
        for k in ("startup_s", "first_frame_s"):
            if getattr(self, k) is not None:
                stats[k] = getattr(self, k)
        if self.preview_path is not None:
            stats["preview"] = str(self.preview_path)
        return stats

    def _audio_end_s(self, trainer) -> float | None:
        """All the audio for a complete video; up to the end of the last frame when the video was
        cut short (truncated file, data.max_frames)."""
        dm = trainer.datamodule
        cut = bool(getattr(dm.dataset, "truncated", False)) or getattr(dm, "max_frames", None) is not None
        if not cut or self._last_pts is None:
            return None
        return float((self._last_pts * self.info.time_base) + 1 / self.info.fps)

    def _abort(self, exc: BaseException) -> None:
        if self._encoder is not None:  # joined before the containers it writes are closed
            encoder, self._encoder = self._encoder, None
            encoder.cancel()
        if self._stack is not None:
            stack, self._stack = self._stack, None
            try:
                stack.__exit__(type(exc), exc, exc.__traceback__)
            except BaseException as e:  # noqa: BLE001 - the original exception is what matters
                log.debug("cleanup after %r also failed: %r", exc, e)
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._abort(exception)
        stream = getattr(trainer.datamodule, "dataset", None)
        if stream is not None and hasattr(stream, "close"):
            stream.close()  # joins the decode thread

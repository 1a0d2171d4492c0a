"""Reference backends for style transfer: the TF Lite files and TF Hub SavedModels.

The TF Lite files run on the small LiteRT runtime (`ai-edge-litert`, a dependency); only the TF Hub
backend needs TensorFlow (an optional extra: `pip install -e .[tf]`). Both runtimes are imported
when a backend is built, not with this module. Both backends take and return torch tensors
[B, 3, H, W] in [0, 1] so the LightningModule treats every backend alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hybridlearn.core.errors import ConfigError, DataError

TFHUB_HANDLE = "https://tfhub.dev/google/magenta/arbitrary-image-stylization-v1-256/2"


def _import_tf():
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ConfigError(
            f"model.backend=tfhub needs TensorFlow: pip install -e .[tf] (or use model.backend=torch or tflite) ({e})"
        ) from None
    return tf


def _litert_interpreter():
    try:
        from ai_edge_litert.interpreter import Interpreter
    # a dependency, but without wheels for some platforms (Windows)
    except ImportError as e:
        raise ConfigError(
            "model.backend=tflite needs the LiteRT runtime: pip install ai-edge-litert "
            f"(or use model.backend=torch) ({e})"
        ) from None
    return Interpreter


class TFLiteBackend:
    """The Magenta TF Lite files run by LiteRT's Interpreter (tf.lite.Interpreter's successor, same
    API): fixed 384x384 content (frames are resized to it and back), style vector from the int8
    predictor."""

    content_size = 384

    def __init__(
        self,
        predict_file: str | Path,
        transfer_file: str | Path,
        threads: int | None = None,
    ):
        interpreter = _litert_interpreter()
        for f in (predict_file, transfer_file):
            if not Path(f).is_file():
                raise DataError(f"{f} not found: put the Magenta TF Lite files under DATA_DIR/models")
        n = threads or torch.get_num_threads()
        self.pred = interpreter(model_path=str(predict_file), num_threads=n)
        self.tran = interpreter(model_path=str(transfer_file), num_threads=n)
        self.pred.allocate_tensors()
        self.tran.allocate_tensors()
        self._p_in = self.pred.get_input_details()[0]["index"]
        self._p_out = self.pred.get_output_details()[0]["index"]
        det = self.tran.get_input_details()
        self._t_content = next(d["index"] for d in det if "content" in d["name"])
        self._t_style = next(d["index"] for d in det if "content" not in d["name"])
        self._t_out = self.tran.get_output_details()[0]["index"]

    def style_vector(self, img: torch.Tensor) -> torch.Tensor:
        """img [B, 3, 256, 256] in [0, 1] -> [B, 100]"""
        out = []
        for x in img.permute(0, 2, 3, 1).float().cpu().numpy():
            self.pred.set_tensor(self._p_in, np.ascontiguousarray(x[None], np.float32))
            self.pred.invoke()
            out.append(self.pred.get_tensor(self._p_out).reshape(-1))
        return torch.from_numpy(np.stack(out))

    def stylize(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        s = self.content_size
        xs = (
            x
            if (h, w) == (s, s)
            else F.interpolate(
                x.float(),
                size=(s, s),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        )
        zz = np.ascontiguousarray(z.float().cpu().numpy().reshape(-1, 1, 1, 100)[:1], np.float32)
        out = []
        for frame in xs.permute(0, 2, 3, 1).float().cpu().numpy():
            self.tran.set_tensor(self._t_content, np.ascontiguousarray(frame[None], np.float32))
            self.tran.set_tensor(self._t_style, zz)
            self.tran.invoke()
            out.append(self.tran.get_tensor(self._t_out)[0].copy())
        y = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)
        if (h, w) != (s, s):
            y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False).clamp_(0, 1)
        return y.to(x.device)


class TFHubBackend:
    """`tensorflow_hub.load(handle)`: a TF Hub handle (needs internet the first time) or a local
    SavedModel folder with the same call signature: (content [B,H,W,3], style [B,256,256,3]) ->
    outputs, outputs[0] the stylized [B,H,W,3] in [0, 1]."""

    def __init__(self, handle: str = TFHUB_HANDLE):
        tf = _import_tf()
        local = Path(str(handle)).expanduser()
        if not str(handle).startswith(("http://", "https://", "gs://")) and not local.is_dir():
            raise DataError(
                f"model.tfhub_handle {handle} is neither a URL nor a SavedModel folder; "
                f"give {TFHUB_HANDLE} or a local folder"
            )
        try:
            import tensorflow_hub as hub

            load = hub.load
        except ImportError as e:  # tensorflow_hub 0.16 imports pkg_resources (setuptools < 81)
            if not local.is_dir():
                raise ConfigError(
                    f"model.backend=tfhub with a URL needs tensorflow_hub: pip install -e .[tf] "
                    f"('setuptools<81' for pkg_resources) ({e})"
                ) from None
            load = tf.saved_model.load  # what hub.load does for a local folder
        try:
            self.module = load(str(local) if local.is_dir() else str(handle))
        except Exception as e:  # noqa: BLE001 - network errors, bad SavedModels
            raise DataError(
                f"model.tfhub_handle {handle} could not be loaded ({type(e).__name__}: {str(e)[:200]}); "
                "check the network or download the SavedModel and pass its folder"
            ) from None
        self.tf = tf
        self.style = None

    def set_style(self, img: torch.Tensor) -> None:
        """img [1, 3, 256, 256] in [0, 1]"""
        self.style = self.tf.constant(img.permute(0, 2, 3, 1).float().cpu().numpy())

    def stylize(self, x: torch.Tensor) -> torch.Tensor:
        content = self.tf.constant(x.permute(0, 2, 3, 1).float().cpu().numpy())
        style = (
            self.tf.repeat(self.style, content.shape[0], axis=0)
            if self.style.shape[0] != content.shape[0]
            else self.style
        )
        out = self.module(content, style)
        y = out[0] if isinstance(out, (list, tuple)) else out
        y = torch.from_numpy(np.asarray(y)).permute(0, 3, 1, 2)
        if y.shape[-2:] != x.shape[-2:]:
            y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return y.clamp_(0, 1).to(x.device)

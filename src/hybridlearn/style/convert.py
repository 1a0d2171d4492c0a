"""Convert Magenta's TF Lite style networks into PyTorch state dicts (no TensorFlow needed).

The flatbuffers are parsed with the `tflite` package. Every CONV_2D / DEPTHWISE_CONV_2D op gives
one layer: its weight tensor (followed through a DEQUANTIZE op when the file stores fp16 weights)
names the layer, its third input is the bias. int8 weights are dequantized per output channel
((q - zero_point) * scale[c] along the tensor's quantized dimension), int32 biases with their own
per-channel scale, fp16 tensors are upcast. Biases are taken from the op, never looked up by name:
the exporter shares identical bias buffers between layers under one name.

Usage:
    python -m hybridlearn.style.convert --out ~/.cache/hybridlearn/style/magenta.pt \
        [--predict data/models/magenta_style_predict_int8.tflite] \
        [--transfer data/models/magenta_style_transfer_fp16.tflite]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
from pathlib import Path

import numpy as np
import torch

from hybridlearn.core.errors import DataError, one_line_errors
from hybridlearn.core.io import atomic_output
from hybridlearn.style.nets import CIN_LAYERS, StylePredictor, StyleTransformer
from hybridlearn.style.sources import ensure_models

PREDICT_FILE = "magenta_style_predict_int8.tflite"
TRANSFER_FILES = {"fp16": "magenta_style_transfer_fp16.tflite", "int8": "magenta_style_transfer_int8.tflite"}
FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    base = os.environ.get("HYBRIDLEARN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hybridlearn"
    )
    return Path(base) / "style"


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _tensor_array(model, sg, buf: bytes, idx: int) -> np.ndarray:
    import tflite

    t = sg.Tensors(idx)
    b = model.Buffers(t.Buffer())
    dtype = {
        tflite.TensorType.FLOAT32: np.float32,
        tflite.TensorType.FLOAT16: np.float16,
        tflite.TensorType.INT8: np.int8,
        tflite.TensorType.INT32: np.int32,
        tflite.TensorType.UINT8: np.uint8,
    }.get(t.Type())
    if dtype is None:
        raise DataError(f"unsupported tensor type {t.Type()} for {t.Name().decode()}")
    if b.DataLength() > 0:
        raw = b.DataAsNumpy().tobytes()
    elif hasattr(b, "Offset") and b.Offset() > 1:  # large-model layout: data after the flatbuffer
        raw = buf[b.Offset() : b.Offset() + b.Size()]
    else:
        raise DataError(f"tensor {t.Name().decode()} has no constant data")
    shape = t.ShapeAsNumpy().tolist() if t.ShapeLength() else []
    arr = np.frombuffer(raw, dtype=dtype).reshape(shape)
    q = t.Quantization()
    if dtype in (np.int8, np.int32, np.uint8) and q is not None and q.ScaleLength() > 0:
        scale = q.ScaleAsNumpy().astype(np.float64)
        zp = q.ZeroPointAsNumpy().astype(np.float64) if q.ZeroPointLength() else np.zeros_like(scale)
        axis = q.QuantizedDimension() if scale.size > 1 else 0
        bshape = [1] * arr.ndim
        if scale.size > 1:
            bshape[axis] = scale.size
        arr = (arr.astype(np.float64) - zp.reshape(bshape if arr.ndim else [])) * scale.reshape(
            bshape if arr.ndim else []
        )
    return np.asarray(arr, dtype=np.float32)


def _parse_tflite(path: Path):
    """(file bytes, model, its first subgraph); one DataError for a missing or unparsable file."""
    import tflite

    if not path.is_file():
        raise DataError(
            f"{path} not found: put the Magenta TF Lite files under DATA_DIR/models (see docs/style_video.md)"
        )
    buf = path.read_bytes()
    try:
        model = tflite.Model.GetRootAsModel(buf, 0)
        sg = model.Subgraphs(0)
        sg.OperatorsLength()
    except Exception as e:  # noqa: BLE001 - any parse failure means a bad file
        raise DataError(f"{path} is not a TF Lite flatbuffer ({e}); restore the file from data/models") from e
    return buf, model, sg


def _op_namer(model):
    """op -> its builtin name (CONV_2D, DEQUANTIZE, ...)."""
    import tflite

    names = {v: k for k, v in tflite.BuiltinOperator.__dict__.items() if not k.startswith("_")}

    def opname(op) -> str:
        code = model.OperatorCodes(op.OpcodeIndex())
        return names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")

    return opname


def _weight_source(sg, opname):
    """tensor index -> the tensor holding its values: int8 files feed weights through DEQUANTIZE ops."""
    producer = {}
    for k in range(sg.OperatorsLength()):
        op = sg.Operators(k)
        for o in op.OutputsAsNumpy():
            producer[int(o)] = op

    def source(i: int) -> int:
        op = producer.get(i)
        if op is not None and opname(op) == "DEQUANTIZE":
            return int(op.InputsAsNumpy()[0])
        return i

    return source


def _conv_layer(model, sg, buf: bytes, op, kind: str, source) -> tuple[str, dict]:
    """(layer name, its weights, bias, stride and fused activation) of one conv op."""
    import tflite

    ins = [int(x) for x in op.InputsAsNumpy()]
    wi = source(ins[1])
    wname = sg.Tensors(wi).Name().decode()
    lname = re.sub(r"/(depthwise_)?weights(_dequantize)?$", "", wname)
    opts = tflite.Conv2DOptions() if kind == "CONV_2D" else tflite.DepthwiseConv2DOptions()
    tab = op.BuiltinOptions()
    opts.Init(tab.Bytes, tab.Pos)
    w = _tensor_array(model, sg, buf, wi)
    if len(ins) > 2 and ins[2] >= 0:
        b = _tensor_array(model, sg, buf, source(ins[2]))
    else:
        b = np.zeros(w.shape[0] if kind == "CONV_2D" else w.shape[-1], np.float32)
    return lname, {
        "kind": "conv" if kind == "CONV_2D" else "depthwise",
        "weight": w,
        "bias": b,
        "stride": opts.StrideH(),
        "act": opts.FusedActivationFunction(),
    }


def read_tflite_layers(path: str | os.PathLike) -> dict[str, dict]:
    """{layer name: {"kind": "conv"|"depthwise", "weight": float32 array (OHWI or 1HWC),
    "bias": float32 array, "stride": int, "act": int}} for every conv op of the file."""
    buf, model, sg = _parse_tflite(Path(path))
    opname = _op_namer(model)
    source = _weight_source(sg, opname)
    layers: dict[str, dict] = {}
    for k in range(sg.OperatorsLength()):
        op = sg.Operators(k)
        kind = opname(op)
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            name, layer = _conv_layer(model, sg, buf, op, kind, source)
            layers[name] = layer
    return layers


def _conv_w(a: np.ndarray, depthwise: bool = False) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.permute(3, 0, 1, 2).contiguous() if depthwise else t.permute(0, 3, 1, 2).contiguous()


def predictor_state_dict(layers: dict[str, dict]) -> dict[str, torch.Tensor]:
    sd: dict[str, torch.Tensor] = {}

    def put(prefix: str, name: str):
        if name not in layers:
            raise DataError(
                f"layer {name} missing from the style prediction file: is it the Magenta MobileNetV2 export?"
            )
        L = layers[name]
        sd[f"{prefix}.weight"] = _conv_w(L["weight"], L["kind"] == "depthwise")
        sd[f"{prefix}.bias"] = torch.from_numpy(L["bias"].copy())

    put("conv", "MobilenetV2/Conv")
    put("blocks.0.depthwise", "MobilenetV2/expanded_conv/depthwise")
    put("blocks.0.project", "MobilenetV2/expanded_conv/project")
    for i in range(1, 17):
        for part in ("expand", "depthwise", "project"):
            put(f"blocks.{i}.{part}", f"MobilenetV2/expanded_conv_{i}/{part}")
    put("conv_1", "MobilenetV2/Conv_1")
    put("bottleneck", "mobilenet_conv/Conv")
    sd["bottleneck.weight"] = sd["bottleneck.weight"].reshape(sd["bottleneck.weight"].shape[0], -1)
    return sd


def transformer_state_dict(layers: dict[str, dict]) -> dict[str, torch.Tensor]:
    sd: dict[str, torch.Tensor] = {}

    def put(prefix: str, name: str, linear: bool = False):
        if name not in layers:
            raise DataError(f"layer {name} missing from the style transfer file: is it the Magenta transformer export?")
        L = layers[name]
        w = _conv_w(L["weight"])
        sd[f"{prefix}.weight"] = w.reshape(w.shape[0], -1) if linear else w
        sd[f"{prefix}.bias"] = torch.from_numpy(L["bias"].copy())

    for k in (1, 2, 3):
        put(f"contract_conv{k}", f"transformer/contract/conv{k}")
        put(f"expand_conv{k}", f"transformer/expand/conv{k}/conv")
    for i in range(1, 6):
        for j in (1, 2):
            put(f"residual{i}_conv{j}", f"transformer/residual/residual{i}/conv{j}")
    for n, _ in CIN_LAYERS:
        scope = n.replace("_", "/")  # residual1/conv1 or expand/conv1
        scope = f"transformer/residual/{scope}" if n.startswith("residual") else f"transformer/{scope}/conv"
        put(f"beta.{n}", f"style_params/{scope}/StyleNorm/Conv", linear=True)
        put(f"gamma.{n}", f"style_params/{scope}/StyleNorm/Conv_1", linear=True)
    return sd


def convert(predict_file: str | os.PathLike, transfer_file: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Convert both TF Lite files into one .pt ({"predictor", "transformer", "meta"}), atomically."""
    predict_file, transfer_file, out = Path(predict_file), Path(transfer_file), Path(out)
    p_sd = predictor_state_dict(read_tflite_layers(predict_file))
    t_sd = transformer_state_dict(read_tflite_layers(transfer_file))
    StylePredictor().load_state_dict(p_sd, strict=True)  # shape check
    StyleTransformer().load_state_dict(t_sd, strict=True)
    payload = {
        "predictor": p_sd,
        "transformer": t_sd,
        "meta": {
            "format": FORMAT_VERSION,
            "predict_file": predict_file.name,
            "predict_md5": _md5(predict_file),
            "transfer_file": transfer_file.name,
            "transfer_md5": _md5(transfer_file),
        },
    }
    with atomic_output(out, overwrite=True) as tmp:
        torch.save(payload, tmp)
    return out


def cached_weights(predict_file: str | os.PathLike, transfer_file: str | os.PathLike, cache_dir=None) -> Path:
    """Path of the converted .pt for these two files under the cache dir; converts on first use."""
    predict_file, transfer_file = Path(predict_file), Path(transfer_file)
    for f in (predict_file, transfer_file):
        if not f.is_file():
            raise DataError(
                f"{f} not found: put the Magenta TF Lite files under DATA_DIR/models or set model.predict_file / model.transfer_file"
            )
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    key = f"{_md5(predict_file)[:10]}_{_md5(transfer_file)[:10]}_v{FORMAT_VERSION}"
    out = cache / f"magenta_{key}.pt"
    if not out.is_file():
        convert(predict_file, transfer_file, out)
    return out


def load_weights(path: str | os.PathLike) -> dict:
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise DataError(
            f"{path} is not a converted style weights file ({e}); delete it and run python -m hybridlearn.style.convert"
        ) from e
    if not isinstance(payload, dict) or "predictor" not in payload or "transformer" not in payload:
        raise DataError(
            f"{path} is not a converted style weights file; delete it and run python -m hybridlearn.style.convert"
        )
    return payload


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    data_dir = Path(os.environ.get("DATA_DIR", "./data")) / "models"
    ap.add_argument("--predict", default=str(data_dir / PREDICT_FILE), help="style prediction .tflite")
    ap.add_argument(
        "--transfer", default=str(data_dir / TRANSFER_FILES["fp16"]), help="style transfer .tflite (fp16 or int8)"
    )
    ap.add_argument("--out", default=None, help="output .pt (default: the cache path used by model.backend=torch)")
    args = ap.parse_args(argv)
    ensure_models([Path(args.predict), Path(args.transfer)])  # the known files: fetched when missing
    if args.out is None:
        out = cached_weights(args.predict, args.transfer)
    else:
        out = convert(args.predict, args.transfer, args.out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The PyTorch port of Magenta's style networks against the TF Lite files."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hybridlearn.core.errors import ConfigError, DataError
from hybridlearn.style.consistency import FlickerMeter, frame_changes
from hybridlearn.style.convert import convert, load_weights, main, read_tflite_layers
from hybridlearn.style.cpuinfo import cpu_has_fast_bf16
from hybridlearn.style.model import style_input
from hybridlearn.style.nets import StylePredictor, StyleTransformer, TemporalStats
from hybridlearn.style.stylize import style_model
from hybridlearn.style.video import load_rgb

sys.path.insert(0, str(Path(__file__).parent))
import style_nets_setup as setup  # noqa: E402

PRED, FP16, INT8 = setup.PRED, setup.FP16, setup.INT8


@pytest.fixture(scope="module")
def models(data_dir) -> Path:
    return data_dir / "models"


@pytest.fixture(scope="module")
def weights_file(models, tmp_path_factory) -> Path:
    return convert(models / PRED, models / FP16, tmp_path_factory.mktemp("w") / "magenta.pt")


@pytest.fixture(scope="module")
def nets(weights_file):
    w = load_weights(weights_file)
    p, t = StylePredictor().eval(), StyleTransformer().eval()
    p.load_state_dict(w["predictor"])
    t.load_state_dict(w["transformer"])
    return p, t


@pytest.fixture(scope="module")
def frame(data_dir) -> np.ndarray:
    import av

    with av.open(str(data_dir / "video" / "big_buck_bunny_23s.mp4")) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i == 60:
                return f.to_ndarray(format="rgb24", width=384, height=384)


def test_converter_reads_layers_and_dequantizes(models):
    layers = read_tflite_layers(models / PRED)
    assert len(layers) == 1 + 2 + 16 * 3 + 2  # conv, expanded_conv, 16 blocks, Conv_1, mobilenet_conv
    dw = layers["MobilenetV2/expanded_conv_1/depthwise"]
    assert dw["kind"] == "depthwise" and dw["weight"].shape == (1, 3, 3, 96) and dw["stride"] == 2
    assert dw["weight"].dtype == np.float32 and np.abs(dw["weight"]).max() < 10
    t = read_tflite_layers(models / INT8)
    assert t["transformer/contract/conv1"]["weight"].shape == (8, 9, 9, 3)
    assert len([k for k in t if k.startswith("style_params")]) == 26


def test_transformer_any_size_divisible_by_4_and_momentum_zero_is_identity(nets):
    _, t = nets
    z = torch.randn(1, 100)
    with torch.inference_mode():
        params = t.style_params(z)
        x = torch.rand(3, 3, 36, 52)
        y = t(x, params)
        y0 = t(x, params, TemporalStats(0.0))
    assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1
    assert torch.equal(y, y0)


def test_convert_cli_and_bad_file(models, tmp_path, capsys):
    assert (
        main(["--predict", str(models / PRED), "--transfer", str(models / INT8), "--out", str(tmp_path / "w.pt")]) == 0
    )
    assert set(load_weights(tmp_path / "w.pt")) == {"predictor", "transformer", "meta"}
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\0" * 64)
    with pytest.raises(DataError, match="bad.tflite"):
        read_tflite_layers(bad)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(DataError, match="junk.pt is not a converted style weights file"):
        load_weights(tmp_path / "junk.pt")


def test_parity_transfer_fp16_and_style_vector(models, nets, frame, data_dir):
    Interpreter = pytest.importorskip("ai_edge_litert.interpreter").Interpreter
    p, t = nets
    style = style_input(load_rgb(data_dir / "styles" / "starry_night.jpg"))
    ip = Interpreter(model_path=str(models / PRED), num_threads=2)
    ip.allocate_tensors()
    ip.set_tensor(ip.get_input_details()[0]["index"], style.permute(0, 2, 3, 1).numpy())
    ip.invoke()
    z_ref = ip.get_tensor(ip.get_output_details()[0]["index"]).reshape(1, 100)
    with torch.inference_mode():
        z = p(style).numpy()
    cos = float((z * z_ref).sum() / np.linalg.norm(z) / np.linalg.norm(z_ref))
    assert cos > 0.999, cos

    content = frame[None].astype(np.float32) / 255
    it = Interpreter(model_path=str(models / FP16), num_threads=2)
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], content if "content" in d["name"] else z_ref.reshape(1, 1, 1, 100))
    it.invoke()
    y_ref = it.get_tensor(it.get_output_details()[0]["index"])
    with torch.inference_mode():
        y = t(torch.from_numpy(content).permute(0, 3, 1, 2), t.style_params(torch.from_numpy(z_ref)))
    diff = np.abs(y.permute(0, 2, 3, 1).numpy() - y_ref)
    assert diff.max() < 1e-4, diff.max()  # measured 4e-5 (PSNR 107 dB)


def test_tflite_backend_agrees_with_torch(data_dir, frame, tmp_path):
    pytest.importorskip("ai_edge_litert")
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
    outs = {}
    for backend in ("torch", "tflite"):
        m = style_model("starry_night.jpg", backend=backend, cache_dir=str(tmp_path))
        m.set_style(None)
        with torch.inference_mode():
            outs[backend] = m.stylize_tensor(x)
    assert outs["torch"].shape == outs["tflite"].shape == x.shape
    mse = float(((outs["torch"] - outs["tflite"]) ** 2).mean())
    assert 10 * np.log10(1 / mse) > 35  # torch port vs TF Lite (style vectors from two predictors)


TFHUB_CHECK = """
import os
import subprocess
import sys

import torch  # before TensorFlow: the other order crashes here (two copies of oneDNN/protobuf)
from hybridlearn.core.errors import DataError
from hybridlearn.style.model import style_input
from hybridlearn.style.stylize import style_model

import tensorflow as tf

data_dir, folder, missing = sys.argv[1:]
os.environ["DATA_DIR"] = data_dir


class FakeHub(tf.Module):  # the TF Hub module's call signature: (content, style) -> [stylized]
    @tf.function(
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32), tf.TensorSpec([None, 256, 256, 3], tf.float32)]
    )
    def __call__(self, content, style):
        mean = tf.reduce_mean(style, axis=[1, 2], keepdims=True)
        return [tf.clip_by_value(0.5 * content + 0.5 * mean, 0.0, 1.0)]


tf.saved_model.save(FakeHub(), folder)
m = style_model("starry_night.jpg", backend="tfhub", tfhub_handle=folder)
x = torch.rand(2, 3, 20, 28)
y = m.stylize_tensor(x)
mean = style_input(m.style_rgb).mean(dim=(2, 3), keepdim=True)
assert torch.allclose(y, (0.5 * x + 0.5 * mean).clamp(0, 1), atol=1e-5)
try:
    style_model("starry_night.jpg", backend="tfhub", tfhub_handle=missing).stylize_tensor(x)
except DataError as e:
    assert "neither a URL nor a SavedModel" in str(e), e
else:
    raise AssertionError("a missing SavedModel was accepted")
print("TFHUB OK")
"""


def test_tfhub_backend_with_local_savedmodel(data_dir, tmp_path):
    """In its own interpreter: TensorFlow's logging outlives the test's captured streams (so TensorFlow
    is never imported here, not even to ask whether it is installed)."""
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow is not installed (the tf extra)")
    script = tmp_path / "tfhub_check.py"
    script.write_text(TFHUB_CHECK)
    p = subprocess.run(
        [sys.executable, str(script), str(data_dir), str(tmp_path / "hub"), str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0 and "TFHUB OK" in p.stdout, p.stderr[-3000:]


# ----------------------------------------------------------------------------- the model's paths
@pytest.fixture(scope="module")
def clip_frames(data_dir) -> torch.Tensor:
    return setup.clip_frames(data_dir)


def test_precision_and_layout_auto_and_default_path_quality(data_dir, weights_file, clip_frames):
    auto = style_model("starry_night.jpg", weights=str(weights_file))
    ref = style_model(
        "starry_night.jpg", weights=str(weights_file), precision="fp32", channels_last=False, fused_norm=False
    )
    assert auto.compute_dtype == (torch.bfloat16 if cpu_has_fast_bf16() else torch.float32)
    assert auto.channels_last and not ref.channels_last and ref.compute_dtype == torch.float32
    with torch.inference_mode():
        y, y_ref = auto.stylize_tensor(clip_frames), ref.stylize_tensor(clip_frames)
    assert y.dtype == torch.float32 and y.shape == clip_frames.shape
    assert setup.psnr(y, y_ref) > 38, setup.psnr(y, y_ref)
    assert ref.transformer.beta["expand_conv3"].weight.dtype == torch.float32  # style maps never cast
    with pytest.raises(ConfigError, match="model.channels_last must be true, false or auto"):
        style_model("starry_night.jpg", weights=str(weights_file), channels_last="yes")


def test_frame_changes_and_flicker_meter_without_copies():
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(7, 3, 8, 10, generator=g), torch.rand(7, 3, 8, 10, generator=g)
    direct = (x[1:] - x[:-1]).abs().mean(dim=(1, 2, 3))
    assert torch.allclose(frame_changes(x[3:], x[2:3]), direct[2:])
    assert float(frame_changes(x[:3], None)[0]) == 0 and torch.allclose(frame_changes(x[:3], None)[1:], direct[:2])
    m = FlickerMeter()
    for a, b in ((0, 3), (3, 4), (4, 7)):  # batches of 3, 1, 3 frames
        m.update(x[a:b], y[a:b])
    want_y = float((y[1:] - y[:-1]).abs().mean(dim=(1, 2, 3)).mean())
    r = m.result()
    assert m.pairs == 6 and abs(r["flicker_input"] - float(direct.mean())) < 1e-6
    assert abs(r["flicker_output"] - want_y) < 1e-6

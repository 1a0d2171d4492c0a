"""The PyTorch port of Magenta's style networks against the TF Lite files (issue #6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hybridlearn.core.errors import DataError
from hybridlearn.style.convert import convert, load_weights, main, read_tflite_layers
from hybridlearn.style.model import StyleTransfer, style_input
from hybridlearn.style.nets import (
    StylePredictor,
    StyleTransformer,
    TemporalStats,
    reflect_pad,
)
from hybridlearn.style.video import load_rgb

PRED = "magenta_style_predict_int8.tflite"
FP16 = "magenta_style_transfer_fp16.tflite"
INT8 = "magenta_style_transfer_int8.tflite"


@pytest.fixture(scope="module")
def models(data_dir) -> Path:
    return data_dir / "models"


@pytest.fixture(scope="module")
def nets(models, tmp_path_factory):
    out = convert(models / PRED, models / FP16, tmp_path_factory.mktemp("w") / "magenta.pt")
    w = load_weights(out)
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


def test_reflect_pad_matches_torch():
    x = torch.randn(2, 3, 9, 11)
    for p in (1, 4):
        assert torch.equal(reflect_pad(x, p), F.pad(x, (p, p, p, p), mode="reflect"))


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
    assert main(["--predict", str(models / PRED), "--transfer", str(models / INT8), "--out", str(tmp_path / "w.pt")]) == 0
    assert set(load_weights(tmp_path / "w.pt")) == {"predictor", "transformer", "meta"}
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\0" * 64)
    with pytest.raises(DataError, match="bad.tflite"):
        read_tflite_layers(bad)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(DataError, match="junk.pt is not a converted style weights file"):
        load_weights(tmp_path / "junk.pt")


def test_parity_transfer_fp16_and_style_vector(models, nets, frame, data_dir):
    tf = pytest.importorskip("tensorflow")
    p, t = nets
    style = style_input(load_rgb(data_dir / "styles" / "starry_night.jpg"))
    ip = tf.lite.Interpreter(model_path=str(models / PRED), num_threads=2)
    ip.allocate_tensors()
    ip.set_tensor(ip.get_input_details()[0]["index"], style.permute(0, 2, 3, 1).numpy())
    ip.invoke()
    z_ref = ip.get_tensor(ip.get_output_details()[0]["index"]).reshape(1, 100)
    with torch.inference_mode():
        z = p(style).numpy()
    cos = float((z * z_ref).sum() / np.linalg.norm(z) / np.linalg.norm(z_ref))
    assert cos > 0.999, cos

    content = frame[None].astype(np.float32) / 255
    it = tf.lite.Interpreter(model_path=str(models / FP16), num_threads=2)
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
    pytest.importorskip("tensorflow")
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
    outs = {}
    for backend in ("torch", "tflite"):
        m = StyleTransfer(style_image="starry_night.jpg", data_dir=str(data_dir), backend=backend,
                          cache_dir=str(tmp_path))
        m.set_style(None)
        with torch.inference_mode():
            outs[backend] = m.stylize_tensor(x)
    assert outs["torch"].shape == outs["tflite"].shape == x.shape
    mse = float(((outs["torch"] - outs["tflite"]) ** 2).mean())
    assert 10 * np.log10(1 / mse) > 35  # torch port vs TF Lite (style vectors from two predictors)


def test_tfhub_backend_with_local_savedmodel(data_dir, tmp_path):
    tf = pytest.importorskip("tensorflow")

    class FakeHub(tf.Module):  # the TF Hub module's call signature: (content, style) -> [stylized]
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32),
                                      tf.TensorSpec([None, 256, 256, 3], tf.float32)])
        def __call__(self, content, style):
            mean = tf.reduce_mean(style, axis=[1, 2], keepdims=True)
            return [tf.clip_by_value(0.5 * content + 0.5 * mean, 0.0, 1.0)]

    folder = tmp_path / "hub"
    tf.saved_model.save(FakeHub(), str(folder))
    m = StyleTransfer(style_image="starry_night.jpg", data_dir=str(data_dir), backend="tfhub",
                      tfhub_handle=str(folder))
    x = torch.rand(2, 3, 20, 28)
    y = m.stylize_tensor(x)
    mean = style_input(m.style_rgb).mean(dim=(2, 3), keepdim=True)
    assert torch.allclose(y, (0.5 * x + 0.5 * mean).clamp(0, 1), atol=1e-5)
    with pytest.raises(DataError, match="neither a URL nor a SavedModel"):
        StyleTransfer(style_image="starry_night.jpg", data_dir=str(data_dir), backend="tfhub",
                      tfhub_handle=str(tmp_path / "nothing")).stylize_tensor(x)

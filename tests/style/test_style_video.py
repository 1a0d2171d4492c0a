"""Video style transfer: stream, timestamps, audio copy, bad inputs, user files never
overwritten and nothing left behind by an interrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hybridlearn.core.errors import ConfigError, DataError
from hybridlearn.style.model import StyleTransfer, model_files, pad_to_multiple
from hybridlearn.style.stylize import settings, style_model, stylize
from hybridlearn.style.video import load_rgb, output_size

sys.path.insert(0, str(Path(__file__).parent))
from conftest import run_cli  # noqa: E402
from style_media import make_audio_only, make_video, probe, video_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
STYLE = "starry_night.jpg"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("style_cache"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("media") / "clip.mp4", frames=12, size=(64, 48))


def run(inp, out, cache_dir, overwrite=False, data=None, model=None, writer=None):
    writer = {"progress": False, **(writer or {})}
    return stylize(
        inp,
        STYLE,
        out,
        overwrite=overwrite,
        data=data,
        model={"cache_dir": cache_dir, **(model or {})},
        writer=writer,
        progress=False,
    )


def test_video_roundtrip_keeps_fps_frames_duration_and_audio_packets(data_dir, clip, tmp_path, cache_dir):
    out = tmp_path / "out.mp4"
    res = run(clip, out, cache_dir, data={"batch_size": 5})
    src, dst = probe(clip), probe(out)
    assert dst["frames"] == src["frames"] == res["frames_written"] == 12
    assert dst["fps"] == src["fps"]
    assert dst["duration"] == pytest.approx(src["duration"], abs=1e-3)
    assert (dst["width"], dst["height"]) == (src["width"], src["height"])
    assert res["audio"] == "copy" and dst["audio_codec"] == "aac"
    assert dst["audio_packets"] == src["audio_packets"]  # byte for byte, not re-encoded
    assert res["flicker_ratio"] > 0 and Path(res["preview"]).is_file()
    assert res["warp_pairs"] == 11 and res["warp_error"] > res["warp_error_input"] >= 0  # (style/consistency.py)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)


def test_stream_is_batched_and_bounded(data_dir, clip):
    dm = video_data(clip, batch_size=5)
    dm.setup("predict")
    batches = list(dm.predict_dataloader())
    assert [b["frames"].shape[0] for b in batches] == [5, 5, 2]
    assert batches[0]["frames"].dtype == torch.uint8 and batches[0]["frames"].shape[1:] == (48, 64, 3)
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(12))
    pts = torch.cat([b["pts"] for b in batches])
    assert bool((pts[1:] > pts[:-1]).all())


def test_no_audio_stream(data_dir, tmp_path, cache_dir, caplog):
    src = make_video(tmp_path / "silent.mp4", frames=6, audio=False)
    res = run(src, tmp_path / "o.mp4", cache_dir)
    assert res["audio"] == "none" and not probe(tmp_path / "o.mp4")["has_audio"]
    assert probe(tmp_path / "o.mp4")["frames"] == 6


def test_audio_reencoded_when_container_cannot_take_it(data_dir, tmp_path, cache_dir):
    src = make_video(tmp_path / "pcm.mkv", frames=6, acodec="pcm_s16le")
    res = run(src, tmp_path / "o.mp4", cache_dir)
    assert res["audio"].startswith("re-encode pcm_s16le->aac")
    assert probe(tmp_path / "o.mp4")["audio_codec"] == "aac"


def test_odd_frame_size_and_max_side(data_dir, tmp_path, cache_dir):
    src = make_video(tmp_path / "odd.mkv", frames=4, size=(37, 29), vcodec="ffv1", audio=False)
    with pytest.warns(UserWarning, match="odd frame size"):
        run(src, tmp_path / "o.mp4", cache_dir)
    d = probe(tmp_path / "o.mp4")
    assert (d["width"], d["height"], d["frames"]) == (36, 28, 4)
    run(src, tmp_path / "small.mp4", cache_dir, data={"max_side": 20})
    assert max(probe(tmp_path / "small.mp4")["width"], probe(tmp_path / "small.mp4")["height"]) == 20
    assert output_size(640, 360, 384, None) == (384, 216) and output_size(640, 360, None, [384, 384]) == (384, 384)


def test_pad_to_multiple_of_4():
    x = torch.rand(1, 3, 29, 37)
    y, (h, w) = pad_to_multiple(x, 4)
    assert y.shape[-2:] == (32, 40) and (h, w) == (29, 37)
    assert torch.equal(y[..., :29, :37], x)


def test_truncated_file_stylizes_what_decodes(data_dir, tmp_path, cache_dir):
    src = make_video(tmp_path / "full.mkv", frames=24, size=(64, 48), vcodec="ffv1")
    data = src.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * 0.45)])
    out = tmp_path / "o.mp4"
    with pytest.warns(UserWarning, match="truncated|damaged"):
        res = run(cut, out, cache_dir)
    n = probe(out)["frames"]
    assert 0 < n < 24 and res["frames_written"] == n and res["truncated_input"] is True
    d = probe(out)
    assert d["has_audio"]  # the output is finished properly (moov written, audio trimmed)


def test_not_a_video(data_dir, tmp_path, cache_dir):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video\n" * 50)
    with pytest.raises(DataError, match="notes.mp4.*not a readable video"):
        run(bad, tmp_path / "o.mp4", cache_dir)
    assert not (tmp_path / "o.mp4").exists()


def test_no_video_stream(data_dir, tmp_path, cache_dir):
    a = make_audio_only(tmp_path / "voice.m4a")
    with pytest.raises(DataError, match="voice.m4a has no video stream"):
        run(a, tmp_path / "o.mp4", cache_dir)


def test_missing_input(data_dir, tmp_path, cache_dir):
    with pytest.raises(DataError, match="nope.mp4 not found"):
        run(tmp_path / "nope.mp4", tmp_path / "o.mp4", cache_dir)


def test_existing_output_refused_unless_overwrite(data_dir, clip, tmp_path, cache_dir):
    out = tmp_path / "o.mp4"
    out.write_bytes(b"precious")
    with pytest.raises(ConfigError, match="o.mp4 already exists.*overwrite=true"):
        run(clip, out, cache_dir)
    assert out.read_bytes() == b"precious"
    run(clip, out, cache_dir, overwrite=True, data={"max_frames": 3})
    assert probe(out)["frames"] == 3


def test_failure_leaves_no_partial_output(data_dir, clip, tmp_path, cache_dir, monkeypatch):
    def boom(self, *a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(StyleTransfer, "stylize_tensor", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        run(clip, tmp_path / "o.mp4", cache_dir)
    assert list(tmp_path.iterdir()) == []


def test_existing_preview_never_overwritten(data_dir, clip, tmp_path, cache_dir):
    """A run for o.mkv once replaced the user's o_preview.png (made by o.mp4's run, or their own)."""
    preview = tmp_path / "o_preview.png"
    preview.write_bytes(b"mine")
    with pytest.raises(ConfigError, match="o_preview.png already exists.*overwrite=true"):
        run(clip, tmp_path / "o.mkv", cache_dir)
    assert preview.read_bytes() == b"mine" and [p.name for p in tmp_path.iterdir()] == ["o_preview.png"]
    res = run(clip, tmp_path / "o.mkv", cache_dir, overwrite=True, data={"max_frames": 2})
    assert Path(res["preview"]) == preview and preview.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_interrupt_mid_run_leaves_nothing(data_dir, clip, tmp_path, cache_dir, monkeypatch, exc):
    """Ctrl-C (or any failure) after the preview frame was stylized: no output, no preview, no temp file."""
    real, calls = StyleTransfer.stylize_tensor, []

    def second_batch_fails(self, x, cuts=None):
        calls.append(x.shape[0])
        if len(calls) == 2:
            raise exc("stop")
        return real(self, x, cuts)

    monkeypatch.setattr(StyleTransfer, "stylize_tensor", second_batch_fails)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    sigint = signal.getsignal(signal.SIGINT)  # Lightning ignores SIGINT after a KeyboardInterrupt
    try:
        with pytest.raises(SystemExit if exc is KeyboardInterrupt else RuntimeError):
            run(clip, out_dir / "o.mp4", cache_dir, data={"batch_size": 4})
    finally:
        signal.signal(signal.SIGINT, sigint)
    assert len(calls) == 2 and list(out_dir.iterdir()) == []
    assert not [t.name for t in threading.enumerate() if t.name.startswith("hybridlearn-")]


def test_truncated_warning_printed_after_the_progress_bar(data_dir, tmp_path, cache_dir, capsys):
    src = make_video(tmp_path / "full.mkv", frames=24, size=(64, 48), vcodec="ffv1")
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(src.read_bytes()[: int(src.stat().st_size * 0.45)])

    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show  # printed as a user sees it, not recorded by pytest
        run(cut, tmp_path / "o.mp4", cache_dir, writer={"progress": True})
    err = capsys.readouterr().err
    i = err.index("looks truncated")
    assert "stylize cut.mkv" in err[:i]  # the bar was drawn...
    assert "stylize cut.mkv" not in err[err.rfind("\n", 0, i) + 1 : i]  # ...but not on the warning's line
    assert "stylize cut.mkv" not in err[i:]  # and not redrawn after it


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "LA", "I;16"])
def test_style_image_modes(data_dir, tmp_path, mode, cache_dir):
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8))
    img = (
        rgb.convert("RGBA")
        if mode == "RGBA"
        else rgb.convert("L").convert(mode)
        if mode in ("LA", "I;16")
        else rgb.convert(mode)
    )
    if mode == "RGBA":
        a = np.asarray(img).copy()
        a[..., 3] = 0
        img = Image.fromarray(a)
    p = tmp_path / f"style_{mode.replace(';', '')}.png"
    img.save(p)
    out = load_rgb(p)
    assert out.shape == (40, 30, 3) and out.dtype == np.uint8
    if mode == "RGBA":  # fully transparent -> white
        assert (out == 255).all()
    m = style_model(p, cache_dir=cache_dir)
    assert m.style_vector(m.style_rgb).shape == (1, 100)


def test_bad_style_image(data_dir, tmp_path, cache_dir):
    p = tmp_path / "style.jpg"
    p.write_bytes(b"nope")
    with pytest.raises(DataError, match="style.jpg is not a readable image"):
        style_model(p, cache_dir=cache_dir)


@pytest.mark.parametrize(
    ("part", "values", "error"),
    [
        ("model", {"backend": "onnx"}, "model.backend must be one of torch, tflite, tfhub"),
        ("model", {"strength": 1.5}, r"model.strength must be >= 0 and <= 1 \(got 1.5\)"),
        ("model", {"temporal_blend": 1.0}, r"model.temporal_blend must be >= 0 and < 1"),
        ("model", {"temporal_flow": -0.1}, r"model.temporal_flow must be >= 0 and < 1"),
        ("model", {"flow_preset": "slow"}, "model.flow_preset must be one of ultrafast, fast, medium"),
        ("model", {"flow_max_side": 8}, "model.flow_max_side must be >= 16"),
        ("model", {"flow_tau": 0}, "model.flow_tau must be > 0 and <= 1"),
        ("model", {"measure_warp": "maybe"}, "model.measure_warp: Value 'maybe' is not a valid bool"),
        ("model", {"threads": 0}, "model.threads must be a positive integer or auto"),
        ("model", {"backend": "tfhub", "strength": 0.5}, "model.strength < 1 needs the style vector"),
        ("model", {"backend": "tfhub", "temporal_momentum": 0.5}, "model.temporal_momentum needs the instance-norm"),
        ("model", {"flow_presets": "fast"}, "model.flow_presets: Key 'flow_presets' not in 'StyleTransferConfig'"),
        ("data", {"max_frames": 0}, r"data.max_frames must be >= 1 and <= 1000000000 \(got 0\)"),
        ("data", {"num_workers": 2}, "data.num_workers must be >= 0 and <= 1"),
        ("data", {"size": [384]}, r"data.size must be \[height, width\], both integers >= 4"),
        ("data", {"max_side": 2}, "data.max_side must be >= 4"),
        ("data", {"interpolation": "CUBIC"}, "data.interpolation must be one of FAST_BILINEAR"),
        ("writer", {"preset": "slowest"}, "callbacks.style_writer.preset must be one of ultrafast"),
        ("writer", {"crf": 99}, "callbacks.style_writer.crf must be >= 0 and <= 51"),
    ],
)
def test_bad_settings_one_line_naming_the_key(part, values, error):
    """The Python API checks the settings as the command line does (style/conf.py), before anything runs."""
    with pytest.raises(ConfigError, match=error):
        settings(input="x.mp4", style=STYLE, **{part: values})


def test_stylize_command_checks_settings_before_torch(tmp_path):
    """`stylize.py model.strength=2`: one line and exit code 2, and torch never imported (a quick answer)."""
    code = (
        "import runpy, sys\n"
        "sys.argv = ['stylize.py', 'model.strength=2']\n"
        "try:\n"
        f"    runpy.run_path({str(ROOT / 'stylize.py')!r}, run_name='__main__')\n"
        "finally:\n"
        "    print('TORCH', 'torch' in sys.modules)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert p.returncode == 2 and p.stderr.strip() == "error: model.strength must be >= 0 and <= 1 (got 2.0)", p.stderr
    assert "TORCH False" in p.stdout


def test_single_image_mode_and_strength(data_dir, tmp_path, cache_dir):
    src = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (30, 42, 3), dtype=np.uint8)).save(src)
    run(src, tmp_path / "full.png", cache_dir, writer={"preview": False})
    run(src, tmp_path / "none.png", cache_dir, model={"strength": 0.0}, writer={"preview": False})
    full = np.asarray(Image.open(tmp_path / "full.png"), np.float32)
    none = np.asarray(Image.open(tmp_path / "none.png"), np.float32)
    assert full.shape == (30, 42, 3)
    assert np.abs(full - none).mean() > 1.0  # strength changes the result
    with pytest.raises(ConfigError, match="image output"):
        run(src, tmp_path / "x.mp4", cache_dir)


def test_temporal_options_lower_flicker_and_warp_error(data_dir, clip, tmp_path, cache_dir):
    """All three temporal options at once (they combine); without measure_warp no flow is computed."""
    base = run(clip, tmp_path / "a.mp4", cache_dir, writer={"preview": False})
    smooth = run(
        clip,
        tmp_path / "b.mp4",
        cache_dir,
        model={"temporal_momentum": 0.9, "temporal_blend": 0.6, "temporal_flow": 0.6},
        writer={"preview": False},
    )
    assert smooth["flicker_output"] < base["flicker_output"]
    assert smooth["warp_error"] < base["warp_error"]
    assert smooth["warp_error_input"] == pytest.approx(base["warp_error_input"])
    quiet = run(clip, tmp_path / "c.mp4", cache_dir, model={"measure_warp": False}, writer={"preview": False})
    assert "warp_error" not in quiet and "ms_per_frame_flow" not in quiet and "flicker_ratio" in quiet


def test_experiment_style_video_end_to_end(data_dir, clip, tmp_path, run_train, cache_dir):
    out = tmp_path / "exp.mp4"
    res = run_train(
        [
            "experiment=style_video",
            f"input={clip}",
            f"style={STYLE}",
            f"output={out}",
            f"model.cache_dir={cache_dir}",
            "callbacks.style_writer.progress=false",
            "data.batch_size=4",
        ]
    )
    assert res["status"] == "completed"
    assert res["metrics"]["frames_written"] == 12 and res["metrics"]["audio"] == "copy"
    assert probe(out)["frames"] == 12


def test_stylize_cli_one_line_error(data_dir, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_text("garbage")
    env = {**os.environ, "HYBRIDLEARN_LOG_DIR": str(tmp_path / "logs")}
    p = run_cli("stylize.py", [f"input={bad}", f"style={STYLE}", f"output={tmp_path / 'o.mp4'}"], cwd=tmp_path, env=env)
    assert p.returncode == 2
    assert "error: " in p.stderr and "bad.mp4" in p.stderr and "Traceback" not in p.stderr
    # an output that cannot be written (as root, a folder under /proc is the one that refuses)
    p = run_cli(
        "stylize.py",
        [
            f"input={data_dir / 'video' / 'big_buck_bunny_23s.mp4'}",
            f"style={STYLE}",
            "output=/proc/hybridlearn/o.mp4",
            "data.max_frames=2",
            "data.max_side=64",
        ],
        cwd=tmp_path,
        env=env,
    )
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr[-2000:]
    assert "cannot write /proc/hybridlearn/o.mp4" in p.stderr


def test_decode_in_a_worker_process(data_dir, clip, tmp_path, cache_dir):
    res = run(clip, tmp_path / "o.mp4", cache_dir, data={"num_workers": 1, "batch_size": 5})
    assert res["frames_written"] == 12 and probe(tmp_path / "o.mp4")["frames"] == 12


@pytest.mark.slow
def test_compiled_transformer_matches_eager(data_dir, clip, tmp_path, cache_dir):
    """torch.compile (about a minute on 2 CPU cores): same frames as eager, odd last batch included."""
    x = torch.rand(5, 3, 36, 52)
    outs = []
    for comp in (False, True):
        m = style_model(STYLE, cache_dir=cache_dir, compile=comp)
        with torch.inference_mode():
            m.set_style(None)
            outs.append(torch.cat([m.stylize_tensor(x[:3]), m.stylize_tensor(x[3:])]))
    assert (outs[0] - outs[1]).abs().max() < 1e-4


def test_model_files_absolute_or_in_the_models_folder(tmp_path):
    absolute = str(tmp_path / "p.tflite")
    assert model_files(None, str(tmp_path), absolute, "t.tflite") == (Path(absolute), tmp_path / "models" / "t.tflite")
    assert model_files("m", None, "p.tflite", "t.tflite") == (Path("m/p.tflite"), Path("m/t.tflite"))
    assert model_files(None, None, "p.tflite", "t.tflite")[0] == Path("models/p.tflite")

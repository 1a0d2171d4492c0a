"""The writer's pixel conversions (style/frames.py) and the CPU measure behind model.threads=auto."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from hybridlearn.style import cpuload
from hybridlearn.style import model as style_model
from hybridlearn.style.frames import to_uint8_rgb, to_yuv420p

sys.path.insert(0, str(Path(__file__).parent))
from style_media import probe  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _smooth_frame(h: int = 48, w: int = 64) -> torch.Tensor:
    """[1, 3, h, w] gradients and a bright square: colours change slowly, as in a stylized frame."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    x = torch.stack([xx, yy, 0.5 + 0.4 * torch.sin(6 * xx) * yy])[None]
    x[..., 10:20, 20:36] = torch.tensor([0.9, 0.2, 0.1])[:, None, None]
    return x.clamp(0, 1)


def test_to_uint8_rgb_rounds_to_nearest():
    y = torch.tensor([0.0, 0.5 / 255, 0.49 / 255, 1.0, 1.2, -0.1]).view(1, 3, 1, 2)  # R, G, B of 2 pixels
    assert to_uint8_rgb(y).reshape(-1).tolist() == [0, 0, 255, 1, 255, 0]


def test_yuv420p_matches_swscale():
    """Same planes as PyAV's (swscale's) rgb24 -> yuv420p conversion: luma to +-1, chroma close
    (2x2 mean vs swscale's filter), and the frame read back as RGB is the source to > 35 dB."""
    y = torch.cat([_smooth_frame(), _smooth_frame().flip(-1)])
    ours = to_yuv420p(y)
    assert ours.shape == (2, 72, 64) and ours.dtype == np.uint8
    rgb = to_uint8_rgb(y)
    for k in range(2):
        ref = av.VideoFrame.from_ndarray(rgb[k], format="rgb24").reformat(format="yuv420p").to_ndarray()
        d = np.abs(ours[k].astype(int) - ref)
        assert d[:48].max() <= 1  # Y
        assert d[48:].mean() < 1.0  # U, V
        back = av.VideoFrame.from_ndarray(ours[k], format="yuv420p").to_ndarray(format="rgb24").astype(float)
        psnr = 10 * np.log10(255**2 / ((back - rgb[k]) ** 2).mean())
        assert psnr > 35
    # the planes are in the order Y, U (blue difference), V (red difference): the red square has V > 128
    v = ours[0, 60:].reshape(24, 32)
    assert v[5:10, 10:18].mean() > 200 and abs(int(v[0, 0]) - 128) < 40


def test_others_busy_cores_leaves_out_this_process(monkeypatch):
    """All CPUs busy 1.5 cores' worth, 0.5 of it ours: others 1.0."""
    hz = cpuload.os.sysconf("SC_CLK_TCK")
    since = cpuload.CpuSample(at=100.0, busy=1000, own=50)
    monkeypatch.setattr(cpuload, "sample", lambda: cpuload.CpuSample(at=102.0, busy=1000 + 3 * hz, own=50 + hz))
    monkeypatch.setattr(cpuload.time, "monotonic", lambda: 102.0)
    assert cpuload.others_busy_cores(since) == pytest.approx(1.0)
    assert cpuload.others_busy_cores(None) is None


@pytest.mark.parametrize(("others", "threads"), [(0.0, 2), (0.4, 2), (1.0, 1), (1.9, 1), (6.0, 1)])
def test_threads_auto_leaves_the_cores_other_processes_use(monkeypatch, others, threads):
    """threads=auto: torch's default less the cores others use (not the load average, which counts
    this process's and the previous run's own work for a minute)."""

    class Fake:
        device, backend, threads, _cpu_since, _threads_before = torch.device("cpu"), "torch", "auto", None, None

    monkeypatch.setattr(style_model, "_DEFAULT_THREADS", 2)
    monkeypatch.setattr(style_model.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(style_model.cpuload, "others_busy_cores", lambda since: others)
    monkeypatch.setattr(style_model.os, "getloadavg", lambda: (9.0, 9.0, 9.0))  # not asked
    torch.set_num_threads(3)  # the caller's own setting
    fake = Fake()
    style_model.StyleTransfer._set_threads(fake)
    assert torch.get_num_threads() == threads
    style_model.StyleTransfer._restore_threads(fake)  # at on_predict_end
    assert torch.get_num_threads() == 3


# what the `stylize` command must not import (a fresh interpreter: this test process has Lightning
# loaded). What Lightning itself imports (torchmetrics' optional packages, torch._dynamo) is not
# listed: that is the run flow's business (core), not the style package's.
NOT_ON_THE_STYLIZE_PATH = (
    "hybridlearn.core.callbacks",  # learning curves and their matplotlib
    "hybridlearn.core.plotting",
    "hybridlearn.style.reproduce",
    "hybridlearn.mnist",
    "hybridlearn.gan",
    "tflite",  # the converter's parser: the converted weights are cached
    "ai_edge_litert",
    "tensorflow",
)


def test_stylize_command_imports_only_what_it_uses(data_dir, tmp_path):
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['stylize.py', 'input={data_dir / 'video' / 'big_buck_bunny_23s.mp4'}', 'style=starry_night.jpg',"
        f" 'output={tmp_path / 'o.mp4'}', 'data.max_frames=4', 'data.max_side=64', 'hydra.run.dir={tmp_path / 'run'}',"
        " 'callbacks.style_writer.progress=false']\n"
        "try:\n"
        f"    runpy.run_path({str(ROOT / 'stylize.py')!r}, run_name='__main__')\n"
        "finally:\n"
        "    print('MODULES', ' '.join(sorted(sys.modules)))\n"
    )
    env = {**os.environ, "DATA_DIR": str(data_dir)}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    loaded = set(p.stdout.split("MODULES", 1)[1].split())
    assert "lightning.pytorch" in loaded and "torchmetrics" in loaded  # the Trainer still runs the model
    # every command reads every package's torch-free settings (core.settings.load_settings): allowed
    loaded -= {f"hybridlearn.{p}{c}" for p in ("mnist", "gan") for c in ("", ".conf")}
    bad = sorted(m for m in loaded if m.split(".")[0] in NOT_ON_THE_STYLIZE_PATH or m in NOT_ON_THE_STYLIZE_PATH)
    bad += sorted(m for m in loaded if any(m.startswith(f"{n}.") for n in NOT_ON_THE_STYLIZE_PATH))
    assert not bad, bad
    assert "cv2" in loaded  # OpenCV's flow, imported when the first frame pair is measured
    assert probe(tmp_path / "o.mp4")["frames"] == 4

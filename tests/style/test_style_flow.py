"""Optical flow, occlusion mask and the warped temporal error (style/flow.py, style/consistency.py),
validated on clips whose motion is known; temporal_flow (style/temporal.py) against per-frame."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hybridlearn.style.consistency import WarpErrorMeter
from hybridlearn.style.flow import FlowEstimator, analysis_size, resize_flow, sample_pair, warp
from hybridlearn.style.stylize import style_model
from hybridlearn.style.temporal import dilate

SHIFT = 4  # pixels per frame, content moving right


@pytest.fixture(scope="module")
def scene(data_dir) -> np.ndarray:
    """A real, textured frame of the demo clip (uint8 [360, 640, 3])."""
    with av.open(str(data_dir / "video" / "big_buck_bunny_23s.mp4")) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i == 300:
                return f.to_ndarray(format="rgb24")


def pan(scene: np.ndarray, frames: int, shift: int = SHIFT, size=(96, 128), top=200, left=300) -> np.ndarray:
    """uint8 [frames, h, w, 3]: a window moving left over the scene, so the content moves right by
    `shift` pixels per frame and new content enters at the left edge."""
    h, w = size
    return np.stack([scene[top : top + h, left - shift * t : left - shift * t + w] for t in range(frames)])


def as_float(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255


def flows_of(frames: np.ndarray, max_side=None):
    fe = FlowEstimator(max_side, "fast")
    return fe.frames(frames, [False] * len(frames), "cpu")


def measure(x: torch.Tensor, y: torch.Tensor, flows) -> dict:
    m = WarpErrorMeter()
    m.update(x, y, flows)
    return m.result()


def test_static_clip_has_no_warp_error(scene):
    frames = np.repeat(pan(scene, 1), 4, axis=0)
    flows = flows_of(frames)
    assert flows[0] is None and all(f is not None for f in flows[1:])
    assert all(float(f.valid.mean()) == 1.0 and float(f.backward.abs().max()) < 0.05 for f in flows[1:])
    x = as_float(frames)
    r = measure(x, x.flip(1), flows)  # any output that does not change
    assert r["warp_pairs"] == 3 and r["warp_error"] < 1e-8 and r["warp_error_input"] < 1e-8


def test_known_shift_is_found_and_the_entering_border_masked(scene):
    frames = pan(scene, 2)
    pair = flows_of(frames)[1]
    back, valid = pair.backward[0], pair.valid[0, 0]
    assert float(back[0, :, SHIFT + 4 :].median()) == pytest.approx(-SHIFT, abs=0.2)  # came from x - 4
    assert float(back[1, :, SHIFT + 4 :].abs().median()) < 0.2
    assert float(valid[:, : SHIFT - 1].max()) == 0.0  # disoccluded: not in the previous frame
    assert float(valid[:, SHIFT + 4 :].mean()) > 0.95  # everything else is seen in both


def test_warp_error_of_a_shift_is_the_shift_only_where_expected(scene):
    frames = pan(scene, 2)
    flows = flows_of(frames)
    x = as_float(frames)
    still = ((x[1] - x[0]).square().sum(0)).mean()  # the frames' difference without motion compensation
    moving = measure(x, x, flows)  # an output that moves with its content
    assert moving["warp_error_input"] < 0.05 * float(still)
    assert moving["warp_error"] == pytest.approx(moving["warp_error_input"])
    frozen = measure(x, x[:1].expand(2, -1, -1, -1), flows)  # an output that ignores the motion
    assert frozen["warp_error"] > 20 * moving["warp_error"]
    # per pixel: the warped previous frame misses the entering border only, which the mask leaves out
    err = (x[1:] - warp(x[:1], flows[1].backward)).square().sum(1)[0]
    assert float(err[:, :SHIFT].mean()) > 20 * float(err[:, SHIFT + 4 :].mean())


def test_warp_error_at_the_analysis_points_of_a_shrunk_flow(scene):
    """Flow at a quarter of the size (64x48 for 256x192 frames): the points sample the full-size
    frames, and a 8-pixel shift is still explained."""
    frames = pan(scene, 2, shift=8, size=(192, 256), top=100, left=300)
    flows = flows_of(frames, max_side=64)
    assert tuple(flows[1].backward.shape[-2:]) == analysis_size(192, 256, 64) == (48, 64)
    x = as_float(frames)
    here, there = sample_pair(x[1:], x[:1], flows[1])
    assert here.shape == (1, 3, 48, 64)
    exact = F.interpolate(x[1:], size=(48, 64), mode="bilinear", align_corners=False, antialias=False)
    assert torch.allclose(here, exact, atol=1e-5)  # the cells' centres
    r = measure(x, x, flows)
    assert r["warp_error_input"] < 0.1 * float((x[1] - x[0]).square().sum(0).mean())


def test_warp_and_resize_flow_move_pixels_exactly():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, 10, 12, generator=g)
    flow = torch.zeros(1, 2, 10, 12)
    flow[:, 0] = -2  # out[x] = img[x - 2]
    assert torch.allclose(warp(img, flow)[..., 2:], img[..., :-2], atol=1e-6)
    big = resize_flow(torch.full((1, 2, 5, 6), 1.5), (10, 12))
    assert big.shape == (1, 2, 10, 12) and torch.allclose(big, torch.full_like(big, 3.0))


@pytest.mark.parametrize("r", [1, 2])
def test_dilate_is_max_pool(r):
    d = torch.rand(2, 1, 9, 13, generator=torch.Generator().manual_seed(r))
    assert torch.equal(dilate(d, r), F.max_pool2d(d, 2 * r + 1, 1, r))


def stylize_clip(data_dir, cache_dir, frames: np.ndarray, **model) -> tuple[torch.Tensor, dict]:
    m = style_model("starry_night.jpg", cache_dir=cache_dir, **model)
    m.on_predict_start()
    out = []
    with torch.inference_mode():
        for b in range(0, len(frames), 4):
            t = torch.from_numpy(frames[b : b + 4])
            out.append(m.predict_step({"frames": t, "pts": torch.arange(len(t)), "index": torch.arange(len(t))}).frames)
    m.on_predict_end()
    return torch.cat(out), m.extra_results


def test_temporal_flow_halves_the_warp_error_of_a_moving_clip(data_dir, scene, tmp_path):
    """A camera pan (3 px per frame, 12 frames): per-frame stylization shimmers; temporal_flow
    carries the previous stylized frame along the motion, so its warped error falls by more than
    half, while the frames stay close to the per-frame ones (no ghost of old content)."""
    frames = pan(scene, 12, shift=3, size=(96, 128))
    base, r0 = stylize_clip(data_dir, str(tmp_path), frames)
    smooth, r1 = stylize_clip(data_dir, str(tmp_path), frames, temporal_flow=0.6)
    assert r0["warp_pairs"] == r1["warp_pairs"] == 11
    assert r0["warp_error_input"] == pytest.approx(r1["warp_error_input"])
    assert r0["warp_error"] > 3 * r0["warp_error_input"]  # the flicker is real
    assert r1["warp_error"] < 0.5 * r0["warp_error"], (r0["warp_error"], r1["warp_error"])
    mse = float((smooth - base).square().mean())
    assert 10 * np.log10(1 / mse) > 25  # the same picture
    assert torch.equal(smooth[0], base[0])  # the first frame has nothing to carry over

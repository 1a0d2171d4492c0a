"""Optical flow between consecutive input frames, the occlusion mask, and warping.

Used by the warped temporal error (`style/consistency.py`, every run) and the motion-compensated
temporal mode (`model.temporal_flow`). The flow comes from OpenCV's DIS optical flow (Kroeger et
al. 2016, `cv2.DISOpticalFlow`) on grayscale input frames area-shrunk so that their longer side is
at most `max_side` (the analysis size): a maintained, dense, CPU-fast flow (a few ms per frame
pair at 256x144), computed on the frames as decoded, whatever device stylizes them. Both
directions are computed: backward (frame t -> t-1) to warp, forward (t-1 -> t) for the
forward-backward consistency check that marks occluded and disoccluded pixels and unreliable flow
(Sundaram et al. 2010, as in Ruder et al. 2016 and Lai et al. 2018).

Pixel (i, j) of the analysis size stands for the full-size point at the centre of its cell, so a
flow is used at full size either upsampled (`resize_flow`, for temporal_flow's full-size warp) or
at those points (`sample_pair`, for the warp error). Warping is plain torch (`F.grid_sample` with
the flow as a tensor), so it runs on any device. Flows are in pixels, channel 0 along x (columns),
channel 1 along y (rows).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# forward-backward check (Sundaram et al. 2010): |fb + ff(p + fb)|^2 <= A (|fb|^2 + |ff|^2) + B
FB_REL, FB_ABS = 0.01, 0.5


def analysis_size(h: int, w: int, max_side: int | None) -> tuple[int, int]:
    """(h, w) shrunk so that the longer side is at most max_side (None: unchanged), aspect kept."""
    if max_side is None or max(h, w) <= max_side:
        return h, w
    s = max_side / max(h, w)
    return max(8, round(h * s)), max(8, round(w * s))


def consistency_mask(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """float32 [h, w]: 1 where pixel p of frame t is seen in frame t-1: p + backward[p] lies in the
    frame and the forward flow there brings it back (forward-backward check); 0 at occlusions,
    disocclusions (content entering the frame) and where the flow is unreliable. Flows [h, w, 2]."""
    import cv2

    h, w = backward.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx, my = gx + backward[..., 0], gy + backward[..., 1]
    fw = cv2.remap(forward, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    err = np.square(backward + fw).sum(-1)
    mag = np.square(backward).sum(-1) + np.square(fw).sum(-1)
    inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    return ((err <= FB_REL * mag + FB_ABS) & inside).astype(np.float32)


def _grid(flow: torch.Tensor, align_corners: bool) -> torch.Tensor:
    """Sampling grid [B, h, w, 2] (grid_sample's [-1, 1] units) of the points p + flow[p], p the
    pixels of flow's own size; flow [B, 2, h, w] in those pixels."""
    b, _, h, w = flow.shape
    eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=flow.device).expand(b, 2, 3)
    grid = F.affine_grid(eye, [b, 1, h, w], align_corners=align_corners)
    if align_corners:
        scale = torch.tensor([2 / max(w - 1, 1), 2 / max(h - 1, 1)], device=flow.device)
    else:
        scale = torch.tensor([2 / w, 2 / h], device=flow.device)
    return grid.add_(flow.float().permute(0, 2, 3, 1) * scale)


def _sample(img: torch.Tensor, grid: torch.Tensor, align_corners: bool) -> torch.Tensor:
    """Bilinear samples of img at the grid's points; outside the frame: the nearest border pixel
    (the occlusion mask leaves those points out)."""
    return F.grid_sample(img.to(grid.dtype), grid, mode="bilinear", padding_mode="border", align_corners=align_corners)


def warp(imgs, flow: torch.Tensor):
    """Backward warp: out[p] = img[p + flow[p]], of one image [B, C, H, W] or of each image of a
    tuple (one sampling grid for all, no concatenated copy); flow [B, 2, H, W] in pixels."""
    grid = _grid(flow, align_corners=True)
    if isinstance(imgs, torch.Tensor):
        return _sample(imgs, grid, True)
    return tuple(_sample(img, grid, True) for img in imgs)


@dataclass
class FlowPair:
    """Motion from frame t-1 to frame t at the analysis size (h, w)."""

    backward: torch.Tensor  # [1, 2, h, w] in analysis pixels: p of frame t was at p + backward[p] in t-1
    valid: torch.Tensor  # [1, 1, h, w] float: consistency_mask

    @functools.cached_property
    def point_grids(self) -> tuple[torch.Tensor, torch.Tensor]:
        """grid_sample grids (align_corners=False) of the analysis points p in a full-size frame,
        and of p + backward[p]; built once, for input and output."""
        return _grid(torch.zeros_like(self.backward), False), _grid(self.backward, False)


def sample_pair(cur: torch.Tensor, prev: torch.Tensor, pair: FlowPair) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-size frames [1, C, H, W] at the analysis points (the cells' centres): (cur[p],
    prev[p + backward[p]]), each [1, C, h, w]. Bilinear point samples, no averaging: what a
    full-size warp error sees, on a regular subset of its pixels."""
    here, there = pair.point_grids
    return _sample(cur, here, False), _sample(prev, there, False)


def resize_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Flow [B, 2, h, w] in pixels -> [B, 2, H, W] in pixels of the new size (bilinear)."""
    h, w = flow.shape[-2:]
    if (h, w) == tuple(size):
        return flow
    out = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    return out * torch.tensor([size[1] / w, size[0] / h], device=flow.device).view(1, 2, 1, 1)


class FlowEstimator:
    """DIS flow between consecutive frames of a stream (keeps the previous frame).

    max_side: frames are area-shrunk so that the longer side is at most this (None: full size).
    preset: DIS's ultrafast | fast | medium (slower, finer)."""

    def __init__(self, max_side: int | None = 256, preset: str = "fast"):
        self.max_side, self.preset = max_side, preset
        self._dis = None  # made with the first pair (imports OpenCV then)
        self.prev: np.ndarray | None = None

    def reset(self) -> None:
        self.prev = None

    def _make_dis(self):
        import cv2  # only runs that estimate flow need OpenCV

        # OpenCV's own thread pool waits actively between jobs and took the cores from torch's
        # threads (a 3 ms torch op took 70-270 ms right after a DIS call): run DIS in this thread
        cv2.setNumThreads(1)
        preset = {
            "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
            "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
            "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
        }[self.preset]
        return cv2.DISOpticalFlow_create(preset)

    def gray(self, frame: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3] RGB -> uint8 [h, w] luma at the analysis size (area averaging)."""
        import cv2

        g = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        h, w = analysis_size(*g.shape, self.max_side)
        return g if (h, w) == g.shape else cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA)

    def pair(self, prev: np.ndarray, cur: np.ndarray, device: torch.device | str = "cpu") -> FlowPair:
        """FlowPair of two gray frames (from `gray`)."""
        if self._dis is None:
            self._dis = self._make_dis()
        back = self._dis.calc(cur, prev, None)  # [h, w, 2]: cur -> prev
        fwd = self._dis.calc(prev, cur, None)
        valid = consistency_mask(back, fwd)
        return FlowPair(
            torch.from_numpy(back).permute(2, 0, 1)[None].to(device),
            torch.from_numpy(valid)[None, None].to(device),
        )

    def frames(self, frames: np.ndarray, starts: list[bool], device) -> list[FlowPair | None]:
        """Flow of each frame of a batch (uint8 [B, H, W, 3]) from the one before it (the last frame
        of the previous batch for the first); None where a scene starts (starts[b])."""
        out = []
        for frame, start in zip(frames, starts):
            g = self.gray(frame)
            out.append(None if start or self.prev is None else self.pair(self.prev, g, device))
            self.prev = g
        return out

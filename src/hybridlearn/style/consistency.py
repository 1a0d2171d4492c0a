"""Temporal consistency of a stylized video, measured in every run (results.json).

- Flicker ratio (`FlickerMeter`): mean |S_t - S_t-1| of the stylized frames over the same for the
  input frames. Cheap, but it counts real motion as flicker.
- Warped temporal error (`WarpErrorMeter`, Lai et al. 2018 "Learning Blind Video Temporal
  Consistency"; also ReCoNet, Ruder et al. 2016): the previous stylized frame is warped onto the
  current one by the optical flow of the INPUT frames (`style/flow.py`), and the squared RGB error
  is averaged over the pixels the forward-backward check finds visible in both frames:

      E = mean over frame pairs of  sum_p M(p) ||O_t(p) - warp(O_t-1)(p)||^2 / sum_p M(p)

  with frames in [0, 1]. The same for the input frames (`warp_error_input`) is the floor: what the
  flow itself leaves unexplained (noise, lighting, flow errors). A static clip gives 0; a stylized
  video that moves with its content gives about the input's value. The sum runs over one
  full-size pixel per cell of the flow's analysis grid (its centre, bilinear: no averaging that
  would hide texture flicker); pairs across scene cuts are left out.
"""

from __future__ import annotations

import torch

from hybridlearn.style.flow import FlowPair, sample_pair


def frame_changes(x: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
    """Mean |x_t - x_t-1| of each frame of x [B, C, H, W] (float, on the CPU: float32 [B]); prev
    [1, C, H, W]: the frame before x[0] (None: x[0]'s change is 0). No concatenated copies: on
    640x360 frames the copies cost more than the differences."""
    out = torch.zeros(x.shape[0], dtype=torch.float32)
    if prev is not None:
        out[0] = (x[0] - prev[0]).abs_().mean().float().cpu()
    if x.shape[0] > 1:
        out[1:] = (x[1:] - x[:-1]).abs_().mean(dim=(1, 2, 3)).float().cpu()
    return out


class FlickerMeter:
    """Temporal flicker: mean |S_t - S_{t-1}| of stylized frames over the same for input frames
    (1.0: output changes as much as the input; larger: the stylization adds flicker)."""

    def __init__(self) -> None:
        self.prev_x = self.prev_y = None
        self.sum_x = self.sum_y = 0.0
        self.pairs = 0

    def update(self, x: torch.Tensor, y: torch.Tensor, dx: torch.Tensor | None = None) -> None:
        """x, y: [B, 3, H, W] float in [0, 1], consecutive frames; dx: frame_changes of x if
        already computed. Keeps views of the last frames (x and y are never written in place)."""
        x, y = x.float(), y.float()
        first = 0 if self.prev_x is not None else 1  # the stream's first frame has no pair
        dx = frame_changes(x, self.prev_x) if dx is None else dx
        dy = frame_changes(y, self.prev_y)
        self.sum_x += float(dx[first:].sum())
        self.sum_y += float(dy[first:].sum())
        self.pairs += x.shape[0] - first
        self.prev_x, self.prev_y = x[-1:], y[-1:]

    def result(self) -> dict[str, float]:
        if not self.pairs:
            return {}
        dx, dy = self.sum_x / self.pairs, self.sum_y / self.pairs
        return {"flicker_input": dx, "flicker_output": dy, "flicker_ratio": dy / max(dx, 1e-12)}


def masked_sq_error(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """(sum_p mask ||a - b||^2 / sum_p mask, sum_p mask): a, b [1, C, h, w], mask [1, 1, h, w]."""
    n = float(mask.sum())
    if n == 0:
        return 0.0, 0.0
    return float(((a - b).square().sum(1, keepdim=True) * mask).sum()) / n, n


class WarpErrorMeter:
    """Warped temporal error of the output and of the input (module doc), over a stream: at the
    flow's analysis points (one per cell of the analysis grid, `flow.sample_pair`), from the
    full-size frames."""

    def __init__(self) -> None:
        self.prev: tuple[torch.Tensor, torch.Tensor] | None = None  # views of the last input and output frames
        self.sum_in = self.sum_out = self.valid = 0.0
        self.pairs = 0

    def update(self, x: torch.Tensor, y: torch.Tensor, flows: list[FlowPair | None]) -> None:
        """x, y [B, 3, H, W] in [0, 1]: consecutive input and output frames (never written in
        place); flows[b]: the motion from the frame before x[b] (None: a scene starts, no pair)."""
        for b, pair in enumerate(flows):
            cur = (x[b : b + 1], y[b : b + 1])
            if pair is not None and self.prev is not None:
                e_in, n = masked_sq_error(*sample_pair(cur[0], self.prev[0], pair), pair.valid)
                e_out, _ = masked_sq_error(*sample_pair(cur[1], self.prev[1], pair), pair.valid)
                if n:
                    self.sum_in += e_in
                    self.sum_out += e_out
                    self.valid += n / pair.valid.numel()
                    self.pairs += 1
            self.prev = cur

    def result(self) -> dict[str, float]:
        if not self.pairs:
            return {}
        return {
            "warp_error": self.sum_out / self.pairs,
            "warp_error_input": self.sum_in / self.pairs,
            "warp_valid": self.valid / self.pairs,  # mean share of pixels visible in both frames
            "warp_pairs": self.pairs,
        }

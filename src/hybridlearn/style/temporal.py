"""Output-side temporal modes: each stylized frame is blended with the previous OUTPUT frame.

- `temporal_blend` (motion-gated, no motion compensation): out_t = lerp(S_t, out_t-1, w) with
  w = blend * (1 - d / blend_tau) clipped to [0, 1], d the input change around the pixel. Static
  regions keep their texture; moving regions are taken fresh from S_t.
- `temporal_flow` (motion-compensated, as ReCoNet / Ruder et al. 2016 at test time, without
  training): out_t = lerp(S_t, W(out_t-1), w), W the backward warp by the optical flow of the
  INPUT frames (style/flow.py), w = flow * M * (1 - d / flow_tau) clipped, M the forward-backward
  consistency mask (0 at occlusions and disocclusions) and d the input's own warping residual
  |x_t - W(x_t-1)| around the pixel: where the flow does not explain the input (flow errors,
  lighting changes, thin moving things) nothing is carried over, so nothing ghosts.

Both read the previous output, so they run frame by frame (temporal_flow first); a scene cut
restarts them. Everything is torch on the frames' device (the flow is a tensor).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hybridlearn.style.flow import FlowPair, resize_flow, warp


def dilate(d: torch.Tensor, r: int) -> torch.Tensor:
    """Max over the (2r + 1)^2 neighbourhood of a [B, 1, H, W] map (= F.max_pool2d(d, 2r + 1, 1, r)),
    as shifted maxima: torch's CPU max_pool2d took ~14 ms on one 640x360 channel, this ~2 ms."""
    if r <= 0:
        return d
    h, w = d.shape[-2:]
    p = F.pad(d, (r, r, r, r), mode="replicate")
    rows = p[..., :, :w].clone()
    for k in range(1, 2 * r + 1):
        torch.maximum(rows, p[..., :, k : k + w], out=rows)
    out = rows[..., :h, :].clone()
    for k in range(1, 2 * r + 1):
        torch.maximum(out, rows[..., k : k + h, :], out=out)
    return out


class TemporalFilter:
    """temporal_flow then temporal_blend over a stream (module doc); weights 0 switch them off."""

    def __init__(self, flow: float = 0.0, flow_tau: float = 0.1, blend: float = 0.0, blend_tau: float = 0.06):
        self.flow, self.flow_tau, self.blend, self.blend_tau = flow, flow_tau, blend, blend_tau
        self.reset()

    def reset(self) -> None:
        self.prev_in = self.prev_out = None

    @property
    def active(self) -> bool:
        return self.flow > 0 or self.blend > 0

    def _motion_gated(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d = (x - self.prev_in).abs().mean(dim=1, keepdim=True)
        d = dilate(d, 2)  # a moving edge un-gates its neighbourhood
        return torch.lerp(y, self.prev_out, self.blend * (1 - d / self.blend_tau).clamp_(0, 1))

    def _motion_compensated(self, x: torch.Tensor, y: torch.Tensor, pair: FlowPair) -> torch.Tensor:
        size = tuple(x.shape[-2:])
        flow = resize_flow(pair.backward, size)
        valid = F.interpolate(pair.valid, size=size, mode="bilinear", align_corners=False)
        prev_in, prev_out = warp((self.prev_in, self.prev_out), flow)
        d = dilate((x - prev_in).abs_().mean(dim=1, keepdim=True), 1)  # (a mismatch un-gates its neighbours)
        wgt = (1 - d / self.flow_tau).clamp_(0, 1).mul_(valid).mul_(self.flow)
        return torch.lerp(y, prev_out, wgt)

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, cuts: torch.Tensor, flows: list[FlowPair | None] | None
    ) -> torch.Tensor:
        """x, y [B, 3, H, W]: input and stylized frames; cuts [B] bool: a scene starts there;
        flows[b]: the motion from the frame before x[b] (needed for temporal_flow)."""
        if not self.active:
            return y
        out = []
        for b in range(x.shape[0]):
            cur, xb = y[b : b + 1], x[b : b + 1]
            if self.prev_out is not None and not bool(cuts[b]):
                if self.flow > 0 and flows is not None and flows[b] is not None:
                    cur = self._motion_compensated(xb, cur, flows[b])
                if self.blend > 0:
                    cur = self._motion_gated(xb, cur)
            out.append(cur)
            self.prev_in, self.prev_out = xb, cur
        return torch.cat(out)

"""A contact sheet: every cut digit with its label, laid out in its sheet's own grid.

python -m hybridlearn.digits.contact --contact-sheet out.png [--preprocess clean --size 28]
python train.py experiment=digits_contact_sheet     # the same from the data config, as a run (make reproduce)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig

from hybridlearn.core.errors import one_line_errors
from hybridlearn.core.io import atomic_output
from hybridlearn.digits.conf import PREPROCESS
from hybridlearn.digits.digitset import DigitSet, build_digits
from hybridlearn.digits.manifest import resolve_sheets

if TYPE_CHECKING:  # the CLI needs no Lightning
    from hybridlearn.core.trainer import TrainerFactory

log = logging.getLogger(__name__)


def contact_sheet(
    d: DigitSet, out: str | Path, scale: int = 2, overwrite: bool = True, highlight: Sequence[int] = ()
) -> Path:
    """Every digit with its label, one block per sheet in the sheet's own grid; `highlight` (digit
    indices, e.g. misclassified ones) are framed in red."""
    from PIL import Image, ImageDraw

    s = d.x.shape[-1] * scale
    cw, ch, gap, head = s + 4, s + 14, 16, 16
    blocks = []
    for i, sh in enumerate(d.sheets):
        idx = torch.nonzero(d.sheet == i).flatten()
        blocks.append((sh, idx))
    width = sum(b[0].cols * cw for b in blocks) + gap * (len(blocks) + 1)
    height = max(b[0].rows * ch for b in blocks) + head + gap
    img = Image.new("RGB", (width, height), (40, 40, 40))
    draw = ImageDraw.Draw(img)
    hl = set(int(i) for i in highlight)
    x0 = gap
    for sh, idx in blocks:
        draw.text((x0, 2), f"{sh.name} ({sh.writer})", fill=(255, 255, 0))
        for j in idx.tolist():
            r, c = d.cell[j].tolist()
            px = (d.x[j, 0].clamp(0, 1) * 255).to(torch.uint8).numpy()
            tile = Image.fromarray(px).resize((s, s), Image.NEAREST)
            ox, oy = x0 + c * cw, head + r * ch
            img.paste(tile, (ox + 2, oy + 12))
            draw.text((ox + 2, oy), str(int(d.y[j])), fill=(120, 255, 120))
            if j in hl:
                draw.rectangle((ox + 1, oy + 11, ox + s + 2, oy + s + 12), outline=(255, 0, 0), width=2)
        x0 += sh.cols * cw + gap
    with atomic_output(out, overwrite=overwrite) as tmp:
        img.save(tmp)
    return Path(out)


SHEET = "fig04_digits.png"  # the paper's Fig. 4


def run_contact_sheet(cfg: DictConfig, output_dir: Path, trainers: TrainerFactory) -> dict[str, Any]:
    """Entry `hybridlearn.digits.contact:run_contact_sheet` (experiment=digits_contact_sheet): the digits
    of the data config (data.manifest, size, preprocess, border, despeckle) as <run>/fig04_digits.png."""
    d = cfg.data
    sheets = resolve_sheets(d.data_dir, d.manifest, list(d.extra_manifests), timeout=d.download_timeout)
    digits = build_digits(sheets, d.size, d.preprocess, d.border, despeckle=d.despeckle)
    out = contact_sheet(digits, Path(output_dir) / SHEET)
    log.info("%d digits of %d sheets -> %s", len(digits.y), len(sheets), out)
    return {"digits": len(digits.y), "sheets": len(sheets)}


@one_line_errors
def main(argv: Sequence[str] | None = None) -> int:
    """`python -m hybridlearn.digits.contact --contact-sheet OUT.png`: 0 when written, 2 on an error."""
    p = argparse.ArgumentParser(
        prog="python -m hybridlearn.digits.contact",
        description="The paper's custom handwritten digits: scanned sheets cut into a grid of labelled cells.",
    )
    p.add_argument("--contact-sheet", required=True, metavar="OUT.png", help="write every sliced digit with its label")
    p.add_argument("--data-dir", default=os.environ.get("DATA_DIR", "./data"))
    p.add_argument("--manifest", default="builtin", help="'builtin' (the paper's sheets) or a sheets YAML")
    p.add_argument("--extra-manifest", action="append", default=[], help="more sheets (repeatable)")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--preprocess", choices=PREPROCESS, default="paper")
    p.add_argument("--border", type=float, default=0.08)
    p.add_argument(
        "--despeckle", type=float, default=0.0, help="clean: erase blobs with less than this fraction of the ink"
    )
    p.add_argument("--scale", type=int, default=2)
    a = p.parse_args(argv)

    sheets = resolve_sheets(a.data_dir, a.manifest, a.extra_manifest)
    d = build_digits(sheets, a.size, a.preprocess, a.border, despeckle=a.despeckle)
    out = contact_sheet(d, a.contact_sheet, scale=a.scale)
    counts = {s.name: len(s.labels) for s in sheets}
    print(f"{len(d.y)} digits ({', '.join(f'{k}: {v}' for k, v in counts.items())}) -> {out}")
    return 0


if __name__ == "__main__":  # as docs/digits.md and make reproduce call it
    sys.exit(main())

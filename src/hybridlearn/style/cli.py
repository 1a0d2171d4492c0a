"""`hybridlearn-stylize input=clip.mp4 style=starry_night.jpg output=out.mp4 [overrides]`
(= `python stylize.py ...` = `python train.py experiment=style_video ...`; see docs/style_video.md)."""

from __future__ import annotations

import sys

from hybridlearn.core.cli import hydra_main


def main() -> None:
    sys.exit(hydra_main(preset=["experiment=style_video"]))

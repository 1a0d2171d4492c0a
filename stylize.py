"""Stylize a video (or an image) with one style image:

    python stylize.py input=clip.mp4 style=starry_night.jpg output=out.mp4 [overwrite=true]
        [model.strength=0.7] [data.max_side=480] [model.temporal_blend=0.6] [model.backend=tflite]

The same run as `python train.py experiment=style_video ...` (conf/experiment/style_video.yaml);
see docs/style_video.md for every option.
"""

import sys

import hydra
from omegaconf import DictConfig

from hybridlearn.cli import run

if not any(a.startswith(("experiment=", "+experiment=")) for a in sys.argv[1:]):
    sys.argv.insert(1, "experiment=style_video")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()

"""Stylize a video (or an image) with one style image:

    python stylize.py input=clip.mp4 style=starry_night.jpg output=out.mp4 [overwrite=true]
        [model.strength=0.7] [data.max_side=480] [model.temporal_blend=0.6] [model.backend=tflite]

The same run as `python train.py experiment=style_video ...` and `hybridlearn-stylize ...`
(conf/experiment/style_video.yaml); see docs/style_video.md for every option.
"""

from hybridlearn.style.cli import main

if __name__ == "__main__":
    main()

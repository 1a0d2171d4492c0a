"""Read handwritten digits with a trained LeNet-5 checkpoint.

    python predict.py CKPT IMAGE_OR_FOLDER [...]            # one digit per image
    python predict.py CKPT sheet.png --grid 10x10           # a whole sheet, cut into a grid

Images: PNG/JPG/..., any size, grey/RGB/RGBA, light or dark ink (auto-detected: a light
background means dark ink; force with --invert yes/no). Each image is prepared the way the
checkpoint's training data was (its datamodule settings are stored in the checkpoint): the digit
sheets' `paper` or `clean` preprocessing, or MNIST-like centring for an MNIST model.
Prints `<image>: <digit> (confidence <p>)` per image (per cell with --grid).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from hybridlearn.core.errors import ConfigError, DataError, HybridlearnError
from hybridlearn.digits.data import (
    IMAGE_SUFFIXES,
    dark_ink,
    load_grey,
    preprocess_cell,
    slice_grid,
)
from hybridlearn.mnist.data import to_range
from hybridlearn.mnist.lenet import LeNet5


def parse_grid(text: str) -> tuple[int, int]:
    try:
        r, c = (int(v) for v in text.lower().replace("*", "x").split("x"))
        if r <= 0 or c <= 0:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"--grid must look like ROWSxCOLS, e.g. 10x10 (got {text!r})") from None
    return r, c


def list_images(paths: list[str]) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"{p}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    return out


def load_model(ckpt: str):
    """(model, preprocessing settings) from a LeNet5 checkpoint, loaded with weights_only=True."""
    path = Path(ckpt)
    if not path.is_file():
        raise ConfigError(f"checkpoint {ckpt} not found; give a .ckpt (e.g. <run>/checkpoints/last.ckpt)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        model = LeNet5.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"checkpoint {ckpt}: cannot load a LeNet-5 from it ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    model.eval()
    dm = dict(raw.get("datamodule_hyper_parameters") or {})
    in_size = int(model.hparams.in_size)
    prep = {
        "preprocess": dm.get("preprocess", "clean"),  # MNIST checkpoints: MNIST-like centring
        "size": int(dm.get("size", in_size)),
        "value_range": dm.get("value_range", "standard"),
        "border": float(dm.get("border", 0.08)),
        "despeckle": float(dm.get("despeckle", 0.0)),
    }
    if prep["size"] != in_size:
        prep["size"] = in_size
    return model, prep


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("checkpoint", help="a LeNet-5 .ckpt (experiment=lenet_digits, lenet_digits_transfer or lenet_mnist)")
    p.add_argument("images", nargs="+", help="image files and/or folders of images")
    p.add_argument("--grid", type=parse_grid, metavar="ROWSxCOLS", help="each image is a sheet of ROWSxCOLS equal cells")
    p.add_argument("--invert", choices=("auto", "yes", "no"), default="auto", help="dark ink on light paper? (default: detect)")
    p.add_argument("--preprocess", choices=("auto", "paper", "clean"), default="auto",
                   help="auto: as the checkpoint's training data; clean crops and centres the digit like MNIST")
    a = p.parse_args(argv)


    try:
        model, prep = load_model(a.checkpoint)
        if a.preprocess != "auto":
            prep["preprocess"] = a.preprocess
        for img in list_images(a.images):
            grey = load_grey(img)
            invert = dark_ink(grey) if a.invert == "auto" else a.invert == "yes"
            if a.grid:
                rows, cols = a.grid
                if grey.shape[0] < rows or grey.shape[1] < cols:
                    raise HybridlearnError(f"{img}: a {grey.shape[1]}x{grey.shape[0]} image cannot hold a {rows}x{cols} grid")
                cells = slice_grid(grey, rows, cols)
                names = [f"{img} [{r},{c}]" for r in range(rows) for c in range(cols)]
            else:
                cells, names = [grey], [str(img)]
            x = torch.stack([preprocess_cell(c, prep["size"], invert, prep["preprocess"], prep["border"], prep["despeckle"]) for c in cells])
            x = to_range(x.unsqueeze(1), prep["value_range"])
            with torch.no_grad():
                prob = torch.softmax(model.eval_logits(x), -1)  # with the checkpoint's test-time augmentation
            conf, digit = prob.max(-1)
            for name, d, c in zip(names, digit.tolist(), conf.tolist()):
                print(f"{name}: {d} (confidence {c:.3f})")
            if a.grid:
                print(f"{img} grid:")
                for r in range(rows):
                    print("  " + " ".join(str(d) for d in digit[r * cols : (r + 1) * cols].tolist()))
    except HybridlearnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Read handwritten digits with a trained LeNet-5 checkpoint.

    python predict.py CKPT page.png                         # every digit on the page (--grid auto)
    python predict.py CKPT page.jpg --grid 10x10            # ... and check they fill 10 x 10
    python predict.py CKPT page.jpg --expect 0123456789     # each row reads 0..9: score the page
    python predict.py CKPT page.jpg --labels page.txt       # the digits of the page, row-major
    python predict.py CKPT photos/                          # every image of a folder
    python predict.py CKPT sheet.png --grid 10x10 --cut uniform   # the old equal-cells slicing
    python predict.py CKPT page.png --ensemble CKPT2 --ensemble CKPT3   # several models' mean

The sheet reader (hybridlearn.digits.reader) finds the digits whatever the margins, paper (plain,
dotted, squared, lined), spacing, slight rotation and lighting; an image of a single digit is a
page with one digit. Pages larger than --max-side (2000 px) are shrunk first. Prints one line per
digit in reading order, `<page> [row,col]: <digit> (confidence <p>)` (row, col from 0), then the
page as a grid, `<page>: found N digits, expected RxC = M` with --grid, the accuracy with
--expect/--labels (an image holding one digit prints `<image>: <digit> (confidence <p>)`), and
writes `<page stem>_read.png` (next to the page, or in --out-dir): the page, enlarged until its
digits are >= 40 px tall, with a box per digit and its digit and confidence just above it, errors
in red, digits read with confidence under 0.90 framed in amber.
An existing picture is never replaced without --overwrite. A page with no digit prints
`<page>: no digit found (...)`; an unreadable image, a count that does not fit --grid or the labels
are reported at the end (exit status 1; 2 when no image could be read) and nothing is printed or
written for that page.
Each digit is prepared the way the checkpoint's training data was (its datamodule settings are
stored in the checkpoint).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hybridlearn.core.cli import ArgumentParser, load_entry
from hybridlearn.core.errors import ConfigError, one_line_errors

ANNOTATED = "_read.png"  # suffix of the annotated pictures (skipped when a folder is read)
MAX_SIDE = 2000  # default --max-side: pages are shrunk to this longest side before reading (bounded memory)
# The reading itself (torch, the reader) is imported only once the arguments are known to be good.
READ_PAGES = "hybridlearn.digits.predict:run"


def parse_grid(text: str) -> tuple[int, int] | None:
    if text.lower() == "auto":
        return None
    try:
        r, c = (int(v) for v in text.lower().replace("*", "x").split("x"))
        if r <= 0 or c <= 0:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"--grid must be auto or ROWSxCOLS, e.g. 10x10 (got {text!r})") from None
    return r, c


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 2)[2],
    )
    p.add_argument("checkpoint", help="a LeNet-5 .ckpt (experiment=lenet_digits, lenet_digits_transfer or lenet_mnist)")
    p.add_argument("images", nargs="+", help="page images and/or folders of them")
    p.add_argument(
        "--ensemble",
        metavar="CKPT",
        action="append",
        help="another checkpoint of the same recipe (e.g. another model.pretrain.seed), repeatable: "
        "the digits are read with the mean of all the models' probabilities",
    )
    p.add_argument(
        "--grid",
        type=parse_grid,
        default=None,
        metavar="auto|ROWSxCOLS",
        help="auto (default): whatever the page holds; ROWSxCOLS: check the digits fill it",
    )
    p.add_argument(
        "--cut",
        choices=("reader", "uniform"),
        default="reader",
        help="reader (default): find the digits; uniform: equal cells of --grid",
    )
    p.add_argument("--expect", metavar="DIGITS", help="what each row reads, e.g. 0123456789 (or all digits, row-major)")
    p.add_argument("--labels", metavar="FILE", help="a text file with the page's digits, row-major")
    p.add_argument("--out-dir", metavar="DIR", help="where the annotated pictures go (default: next to each page)")
    p.add_argument("--no-annotate", action="store_true", help="do not write <page>_read.png")
    p.add_argument("--overwrite", action="store_true", help="replace existing annotated pictures")
    p.add_argument("--max-side", type=int, default=MAX_SIDE, help="shrink larger pages to this longest side first")
    p.add_argument(
        "--invert", choices=("auto", "yes", "no"), default="auto", help="dark ink on light paper? (default: detect)"
    )
    p.add_argument(
        "--preprocess",
        choices=("auto", "paper", "clean"),
        default="auto",
        help="auto: as the checkpoint's training data; clean crops and centres the digit like MNIST",
    )
    return p


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    p = parser()
    a = p.parse_args(argv)
    if a.expect is not None and not a.expect.isdigit():
        p.error(f"--expect takes digits, e.g. 0123456789 (got {a.expect!r})")
    if a.max_side < 64:
        p.error("--max-side must be at least 64")
    for c in [a.checkpoint, *(a.ensemble or [])]:
        if not Path(c).expanduser().is_file():
            raise ConfigError(f"checkpoint {c} is not a file; give a LeNet-5 .ckpt")
    for image in a.images:  # before torch is imported: a typo costs a fraction of a second
        if not Path(image).expanduser().exists():
            raise ConfigError(f"{image} is neither an image nor a folder; give page images or folders of them")
    return load_entry(READ_PAGES)(a)


if __name__ == "__main__":
    sys.exit(main())

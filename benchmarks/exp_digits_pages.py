"""Synthetic pages read by `predict.py`'s path (issue 39): for each kind of page the study reads
(hybridlearn.digits.study.PAGE_KINDS: 60 px scans and photos, small ruled scans, small unruled
scans), the pages whose count of digits is exactly right, the share found in reading order, the
accuracy on the page and on the same MNIST digits given as clean cells, for each checkpoint.

    DATA_DIR=../shared/data python benchmarks/exp_digits_pages.py CKPT [CKPT2 ...] [--pages 12] [--offset 0]

`--offset` picks the MNIST test digits (page p holds digits offset + 100 p ...); `--source train`
reads MNIST training digits instead (for choosing reader settings without the test digits).
Accuracies, not timings: any machine gives the same numbers.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from hybridlearn.digits.predict import classify, load_model, read_digits
from hybridlearn.digits.study import PAGE_KINDS
from hybridlearn.digits.synth import found_in_order, mnist_pages
from hybridlearn.mnist.data import load_mnist


def read_kind(model, prep, x, y, styles, margin: int, n_pages: int, offset: int) -> dict[str, float]:
    """The pages of one kind read as predict.py reads a page (--grid auto)."""
    exact = found = right_page = right_clean = n = 0
    for page in mnist_pages(x, y, n_pages=n_pages, styles=styles, margin=margin, offset=offset):
        reading = read_digits(model, prep, np.asarray(page.image, np.float32) / 255, None)
        clean, _ = classify(model, prep, [x[k] / 255.0 for k in page.index], invert=False)
        exact += len(reading.digits) == len(page.labels)
        found += found_in_order(page, reading.boxes) * len(page.labels)
        right_page += sum(int(d == t) for d, t in zip(reading.digits, page.labels))
        right_clean += sum(int(d == t) for d, t in zip(clean, page.labels))
        n += len(page.labels)
    return {
        "exact": exact,
        "pages": n_pages,
        "n": n,
        "found": found / n,
        "page": right_page / n,
        "clean": right_clean / n,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="+", help="LeNet-5 checkpoints (lenet_digits_transfer, lenet_mnist, ...)")
    ap.add_argument("--pages", type=int, default=12, help="pages of each kind (default 12, as the study)")
    ap.add_argument("--offset", type=int, default=0, help="first MNIST digit (default 0, as the study)")
    ap.add_argument("--source", choices=("test", "train"), default="test", help="MNIST split the digits come from")
    a = ap.parse_args()
    raw = load_mnist(os.environ.get("DATA_DIR", "data"))
    x, y = raw[f"{a.source}_x"].numpy(), raw[f"{a.source}_y"].numpy()
    print(f"MNIST {a.source} digits from {a.offset}, {a.pages} pages of each kind")
    print("| checkpoint | pages | exact count | found in reading order | accuracy on the page | clean cells |")
    print("|---|---|---|---|---|---|")
    for ckpt in a.checkpoints:
        model, prep = load_model(ckpt)
        for kind, (styles, margin) in PAGE_KINDS.items():
            r = read_kind(model, prep, x, y, styles, margin, a.pages, a.offset)
            print(
                f"| {ckpt} | {kind} | {r['exact']}/{r['pages']} | {r['found']:.3f} | {r['page']:.3f} | {r['clean']:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

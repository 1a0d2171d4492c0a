"""Time to answer for the commands a user gets wrong: config errors, unknown names, --help, --cfg job,
and the argument errors of generate.py / predict.py. Each case is a fresh `python` process (what a
user pays), run `--rounds` times; the median and best are reported.

    python benchmarks/bench_startup.py                      # this checkout
    python benchmarks/bench_startup.py --before 5296636     # ... beside a git ref, rounds interleaved
    python benchmarks/bench_startup.py --rounds 1 --cases 2 # smoke: two cases, once
    python benchmarks/bench_startup.py --before ef62d19 --only stylize --rounds 7   # issue 35.1

The last case is not an error: `stylize.py` on one frame of the demo clip (whole command, from the
process start to the video written; the style stream's first frame is most of it), DATA_DIR's data.

With --before, the ref is checked out into a temporary git worktree and run with the same
interpreter (PYTHONPATH and HYBRIDLEARN_CONF point at it), so both trees see the same machine load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import describe  # noqa: E402

CASES: list[tuple[str, list[str]]] = [
    ("unknown experiment", ["train.py", "experiment=nope"]),
    ("unknown key", ["train.py", "model.foo=1"]),
    ("bad value model.lr=-1", ["train.py", "model.lr=-1"]),
    ("train.py --help", ["train.py", "--help"]),
    ("train.py --cfg job", ["train.py", "--cfg", "job"]),
    ("generate.py -n 0", ["generate.py", "missing.ckpt", "--out", "x.png", "-n", "0"]),
    ("predict.py --grid ten", ["predict.py", "missing.ckpt", "page.png", "--grid", "ten"]),
    (
        "stylize one frame",
        [
            "stylize.py",
            "input=big_buck_bunny_23s.mp4",
            "style=starry_night.jpg",
            "output={out}/o.mp4",
            "data.max_frames=1",
        ],
    ),
]


def time_case(tree: Path, args: list[str], env: dict[str, str]) -> tuple[float, int]:
    with tempfile.TemporaryDirectory(prefix="bench_startup_out_") as out:  # a fresh output every round
        args = [a.replace("{out}", out) for a in args]
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, str(tree / args[0]), *args[1:]], cwd=tree, env=env, capture_output=True)
        return time.perf_counter() - t0, p.returncode


def tree_env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree / "src"), "HYBRIDLEARN_CONF": str(tree / "conf")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", metavar="REF", help="a git ref to compare with (e.g. the commit before a change)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cases", type=int, default=len(CASES), help="run only the first N cases")
    ap.add_argument("--only", help="run only the cases whose name contains this word")
    a = ap.parse_args()
    cases = [c for c in CASES[: a.cases] if not a.only or a.only in c[0]]
    trees = {"now": ROOT}
    tmp = None
    if a.before:
        tmp = tempfile.mkdtemp(prefix="bench_startup_")
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", tmp, a.before], check=True, capture_output=True
        )
        trees = {"before": Path(tmp), "now": ROOT}
    print(f"at start: {describe()}")
    times: dict[tuple[str, str], list[float]] = {}
    codes: dict[tuple[str, str], int] = {}
    try:
        for _ in range(a.rounds):  # interleaved: every case and tree once per round
            for name, args in cases:
                for label, tree in trees.items():
                    s, rc = time_case(tree, args, tree_env(tree))
                    times.setdefault((name, label), []).append(s)
                    codes[(name, label)] = rc
    finally:
        if tmp:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", tmp], capture_output=True)
    head = "| case | " + " | ".join(f"{t} median s | {t} best s" for t in trees) + (" | speed-up |" if a.before else "")
    print(head)
    print("|---" * (1 + 2 * len(trees) + bool(a.before)) + "|")
    for name, _ in cases:
        cells = []
        for label in trees:
            ts = times[(name, label)]
            cells += [f"{statistics.median(ts):.2f}", f"{min(ts):.2f}"]
        if a.before:
            cells.append(f"{statistics.median(times[(name, 'before')]) / statistics.median(times[(name, 'now')]):.1f}x")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(
        f"load average at end: {os.getloadavg()[0]:.2f}; exit codes now: {sorted({codes[(n, 'now')] for n, _ in cases})}"
    )


if __name__ == "__main__":
    main()

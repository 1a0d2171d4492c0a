"""Wall time of `make reproduce` (QUICK by default) into a fresh folder, so every run runs: this
checkout with its default launcher (joblib, 2 runs at once on >= 2 cores), optionally the same with
`hydra/launcher=basic` (one run after another) and a git ref's own `make reproduce`, rounds interleaved
so each sees the same machine load. Best and median per case, the load average and the CPU.

    python benchmarks/bench_reproduce.py                          # QUICK: <= 5 min is the goal
    python benchmarks/bench_reproduce.py --basic --before ef62d19 # ... beside one-after-another and a ref
    python benchmarks/bench_reproduce.py --paper --rounds 1       # the paper's scale (~100 min a case)
    python benchmarks/bench_reproduce.py --rounds 1 --basic --stages style \\
        reproduce.scale.quick.style.set.data.max_frames=6         # smoke: seconds

Extra arguments are overrides given to every case. The caches (~/.cache/hybridlearn: the pretrained
MNIST LeNets, the converted style weights) are shared: a fresh machine fills them in the first round.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import describe  # noqa: E402


def run_case(tree: Path, args: list[str]) -> tuple[float, int]:
    """One `train.py experiment=reproduce <args>` into a fresh log folder: (seconds, exit code)."""
    logs = Path(tempfile.mkdtemp(prefix="bench_reproduce_"))
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "HYBRIDLEARN_CONF": str(tree / "conf")}
    # absolute: a git ref's tree lives in a temporary folder, where ../shared/data is another folder
    env["DATA_DIR"] = str(Path(os.environ.get("DATA_DIR") or ROOT / "data").resolve())
    cmd = [sys.executable, str(tree / "train.py"), "experiment=reproduce", *args, f"paths.log_dir={logs}"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if p.returncode:
        print(f"  exit {p.returncode}: {(p.stderr.strip().splitlines() or [''])[-1]}", flush=True)
    shutil.rmtree(logs, ignore_errors=True)
    return seconds, p.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", metavar="REF", help="a git ref whose make reproduce to time beside this one")
    ap.add_argument("--basic", action="store_true", help="also time hydra/launcher=basic (one run after another)")
    ap.add_argument("--paper", action="store_true", help="the paper's scale instead of QUICK")
    ap.add_argument("--stages", help="comma-separated stages (default: reproduce.stages)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("overrides", nargs="*", help="more overrides for every case")
    a = ap.parse_args()
    common = ([] if a.paper else ["reproduce.quick=true"]) + ([f"reproduce.stages=[{a.stages}]"] if a.stages else [])
    common += a.overrides
    cases = {"now": (ROOT, common)}
    if a.basic:
        cases["now, hydra/launcher=basic"] = (ROOT, [*common, "hydra/launcher=basic"])
    tmp = None
    if a.before:
        tmp = tempfile.mkdtemp(prefix="bench_reproduce_tree_")
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", tmp, a.before], check=True)
        cases[f"before ({a.before})"] = (Path(tmp), common)
    print(f"at start: {describe()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)
    times: dict[str, list[float]] = {c: [] for c in cases}
    codes: dict[str, set[int]] = {c: set() for c in cases}
    try:
        for r in range(a.rounds):  # interleaved: every case once per round
            for name, (tree, args) in cases.items():
                s, rc = run_case(tree, args)
                times[name].append(s)
                codes[name].add(rc)
                print(f"round {r + 1} {name}: {s / 60:.2f} min (exit {rc}; load {os.getloadavg()[0]:.2f})", flush=True)
    finally:
        if tmp:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", tmp], capture_output=True)
    print("| case | median min | best min | exit codes |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts) / 60:.2f} | {min(ts) / 60:.2f} | {sorted(codes[name])} |")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

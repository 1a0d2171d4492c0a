"""The GOM study's grids (175 sigmoid MLPs + 405 autoencoders, 100 epochs each): one-at-a-time
Lightning runs vs the vectorized job (`experiment=gom_mlp_grid` / `gom_autoencoder_grid`).

    DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_gom_grid.py [--sample 4] [--workers 1,2]

One-at-a-time: the real experiment configs (`experiment=gom_mlp` / `gom_autoencoder`, Hydra-composed,
CSV + TensorBoard loggers, best/last checkpoints, test of the best checkpoint) run in-process through
the core's `run()`, for a SAMPLE of grid points spread over the grid (`--sample` per grid; widths and
depths / hidden sizes evenly spaced); the per-model mean is extrapolated to the full grid (stated in
the table). Process start-up and imports are not counted (a Hydra multirun pays them once per job
on top of this).
Vectorized: `train_sigmoid_grid` on the full grids (the code path of the grid entries), timed for
each `grid.workers` count in --workers (chunks trained at once, one thread each; workers=1 runs with
--threads torch threads); data loading included. Same machine, same process, same run.
Writes a Markdown table to benchmarks/results_gom.md (or --out).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("DATA_DIR", str((ROOT / ".." / "shared" / "data").resolve()))

from hybridlearn.gom.data import prepare_gom  # noqa: E402
from hybridlearn.gom.grid import NetSpec, train_sigmoid_grid  # noqa: E402
from hybridlearn.gom.nets import ae_sizes, mlp_sizes  # noqa: E402

MLP_LRS = [0.0001, 0.001, 0.01, 0.1, 0.2, 0.5, 0.9]
AE_LRS = [0.001, 0.01, 0.1]
AE_HIDDEN = list(range(1, 68)) + list(range(69, 137))


def one_at_a_time(overrides: list[list[str]], workdir: Path) -> list[float]:
    from conftest import (
        compose_cfg,  # the same composition as `python train.py <overrides>`
    )

    from hybridlearn.core.runner import run

    times = []
    for i, ov in enumerate(overrides):
        cfg = compose_cfg(ov, workdir / f"run{i}")
        t = time.perf_counter()
        run(cfg)
        times.append(time.perf_counter() - t)
        print(f"  one-at-a-time {' '.join(ov[1:])}: {times[-1]:.2f} s", flush=True)
    return times


def vectorized(workers: int, threads: int, epochs: int) -> tuple[float, float, float]:
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    d = prepare_gom(os.environ["DATA_DIR"], seed=0)
    mlp = [NetSpec(tuple(mlp_sizes(68, dp, w)), lr, 0) for dp in range(1, 6) for w in range(1, 6) for lr in MLP_LRS]
    ae = [NetSpec(tuple(ae_sizes(68, h)), lr, 0) for h in AE_HIDDEN for lr in AE_LRS]
    train_sigmoid_grid(mlp, d.x_train, d.y_train, d.x_val, d.y_val, epochs=epochs, workers=workers)
    t2 = time.perf_counter()
    train_sigmoid_grid(ae, d.x_train, d.x_train, d.x_val, d.x_val, epochs=epochs, workers=workers)
    t3 = time.perf_counter()
    return (t2 - t0), (t3 - t2), (t3 - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sample", type=int, default=4, help="one-at-a-time runs per grid (extrapolated)")
    ap.add_argument("--workers", default="1,2", help="grid.workers values to time, e.g. 1,2")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the vectorized job when workers=1")
    ap.add_argument("--seq-threads", type=int, default=1, help="torch threads for the one-at-a-time runs")
    ap.add_argument("--rounds", type=int, default=1, help="vectorized timings per thread count (min taken)")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results_gom.md"))
    a = ap.parse_args()
    workers = [int(t) for t in a.workers.split(",")]
    n = max(1, a.sample)
    pts_mlp = [(1 + (i * 4) // max(1, n - 1), 1 + (i * 4) // max(1, n - 1), MLP_LRS[(i * 3) % 7]) for i in range(n)]
    pts_ae = [(AE_HIDDEN[(i * (len(AE_HIDDEN) - 1)) // max(1, n - 1)], AE_LRS[i % 3]) for i in range(n)]
    common = ["seed=0", f"trainer.max_epochs={a.epochs}"]

    with tempfile.TemporaryDirectory() as tmp:
        # warm-up (imports, first Lightning run) not timed
        torch.set_num_threads(a.seq_threads)
        one_at_a_time([["experiment=gom_mlp", "trainer.max_epochs=2"]], Path(tmp) / "warm")
        t_mlp = one_at_a_time(
            [
                ["experiment=gom_mlp", *common, f"model.net.depth={dp}", f"model.net.width={w}", f"model.lr={lr}"]
                for dp, w, lr in pts_mlp
            ],
            Path(tmp) / "mlp",
        )
        t_ae = one_at_a_time(
            [["experiment=gom_autoencoder", *common, f"model.net.hidden={h}", f"model.lr={lr}"] for h, lr in pts_ae],
            Path(tmp) / "ae",
        )
    vec_best = {}
    runs: dict[int, list] = {w: [] for w in workers}
    for _ in range(max(1, a.rounds)):  # rounds interleaved, best taken: robust to other jobs on the machine
        for w in workers:
            runs[w].append(vectorized(w, a.threads, a.epochs))
            m, e, tot = runs[w][-1]
            print(f"  vectorized workers={w}: MLP grid {m:.2f} s, AE grid {e:.2f} s, total {tot:.2f} s", flush=True)
    for w in workers:
        vec_best[w] = tuple(min(r[j] for r in runs[w]) for j in range(3))
    m_mlp, m_ae = statistics.mean(t_mlp), statistics.mean(t_ae)
    seq_mlp, seq_ae = m_mlp * 175, m_ae * 405
    best_t = min(workers, key=lambda t: vec_best[t][2])
    lines = [
        "# GOM grids: one-at-a-time vs vectorized",
        "",
        f"Machine: {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), shared with other jobs "
        f"(load average at the end {os.getloadavg()[0]:.1f}); torch {torch.__version__}; {a.epochs} epochs per network.",
        "",
        "| path | MLP grid (175) | AE grid (405) | whole study (580) | ratio vs one-at-a-time |",
        "|---|---|---|---|---|",
        f"| one-at-a-time Lightning runs, torch threads={a.seq_threads} (mean of {n}+{n} sampled runs x 175 / 405; "
        f"{m_mlp:.2f} s/MLP, {m_ae:.2f} s/AE) | {seq_mlp:.0f} s | {seq_ae:.0f} s | {seq_mlp + seq_ae:.0f} s | 1x |",
    ]
    for t in workers:
        m, e, tot = vec_best[t]
        how = f"workers={t}, 1 thread each" if t > 1 else f"workers=1, torch threads={a.threads}"
        lines.append(
            f"| vectorized, {how} (best of {max(1, a.rounds)}) | {m:.1f} s | {e:.1f} s | {tot:.1f} s | "
            f"{(seq_mlp + seq_ae) / tot:.0f}x |"
        )
    lines += [
        "",
        f"Best vectorized: workers={best_t}, {vec_best[best_t][2]:.1f} s for all 580 networks.",
        f"Sampled one-at-a-time points: MLP (depth, width, lr) {pts_mlp}; AE (hidden, lr) {pts_ae}.",
        "",
    ]
    text = "\n".join(lines)
    print("\n" + text)
    Path(a.out).write_text(text)
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()

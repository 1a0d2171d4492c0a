"""Every benchmark command of the README runs, at its smallest size (a few steps; no timing claim),
so a benchmark cannot rot unnoticed after a refactor."""

from __future__ import annotations

from conftest import run_process


def bench(args: list[str], tmp_path) -> str:
    p = run_process(
        f"benchmarks/{args[0]}",
        args[1:],
        env={"HYBRIDLEARN_LOG_DIR": str(tmp_path / "logs"), "HYBRIDLEARN_CACHE": str(tmp_path / "cache")},
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return p.stdout


def test_bench_lenet_smallest(tmp_path, data_dir):
    out = bench(["bench_lenet.py", "--repeats", "1", "--train-subset", "512"], tmp_path)
    assert "ratio Lightning / bare" in out


def test_bench_gan_paired_smallest(tmp_path, data_dir):
    out = bench(
        [
            "bench_gan.py",
            "--paired",
            "--steps",
            "3",
            "--warmup",
            "1",
            "--rounds",
            "1",
            "--variants",
            "default",
            "--no-fid",
        ],
        tmp_path,
    )
    assert "bare" in out


def test_bench_gom_grid_smallest(tmp_path, data_dir):
    md = tmp_path / "gom.md"
    bench(["bench_gom_grid.py", "--sample", "1", "--workers", "1", "--epochs", "2", "--out", str(md)], tmp_path)
    assert md.read_text().count("|") > 10


def test_bench_startup_smallest(tmp_path):
    out = bench(["bench_startup.py", "--rounds", "1", "--cases", "2"], tmp_path)
    assert "unknown experiment" in out and "exit codes now: [2]" in out


def test_bench_style_video_smallest(tmp_path, data_dir):
    out = bench(["bench_style_video.py", "--smoke", "--baseline", "malloc_keep_mb=null"], tmp_path)
    assert "|" in out and "Default / baseline pipeline frames/s" in out


def test_exp_style_int8_smallest(tmp_path, data_dir):
    md = tmp_path / "int8.md"
    bench(["exp_style_int8.py", "--frames", "1", "--batch", "1", "--rounds", "1", "--out", str(md)], tmp_path)
    text = md.read_text()
    assert "| int8 (every conv) |" in text and text.count("| residual") == 10 + 1  # 10 activations + the conv row

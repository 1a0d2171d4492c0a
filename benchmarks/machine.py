"""The machine a benchmark ran on, printed beside its numbers: CPU model and SIMD flags, the load
average, and the yardstick (one bare LeNet-5 epoch) that makes numbers from two machines comparable.
Shared by every benchmark; imports no torch at module level, so a benchmark can still cap the
instruction set (bench_style_isa.apply_isa_cap) after importing it."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# the flags that decide which kernels run: AVX2 / AVX-512 / bf16 dot products / AMX
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_model() -> tuple[str, str]:
    """(CPU model name, the SIMD flags of FLAGS it has) from /proc/cpuinfo."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            if key.strip() == "model name":
                name = val.strip()
            elif key.strip() == "flags":
                flags = set(val.split())
    except OSError:
        pass
    return name, " ".join(f for f in FLAGS if f in flags) or "-"


def describe() -> str:
    """One line: CPU, cores, flags and the load average now."""
    name, flags = cpu_model()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{name}, {os.cpu_count()} CPUs, flags: {flags}; load average {load}"


def load_per_core() -> tuple[float, float]:
    """(1-minute load average, the same per core)."""
    load = os.getloadavg()[0]
    return load, load / (os.cpu_count() or 1)


def check_load(when: str) -> str:
    load, per_core = load_per_core()
    msg = f"load average {when}: {load:.2f} ({per_core:.2f} per core)"
    # After the runs the 1-minute average holds the benchmark's own 2 busy threads (~1 per core):
    # allow that much, and warn only above it.
    limit = 0.5 if when == "before" else 1.5
    if per_core > limit:
        msg += f" -- WARNING: above {limit} per core, the machine is busy; compare same-run ratios only"
    elif when == "after":
        msg += " (includes this benchmark's own threads)"
    print(msg, flush=True)
    return msg


def lenet_epoch_s(batch_size: int = 128) -> float:
    """One bare LeNet-5 epoch on the MNIST train split (bench_lenet.py's bare loop): the yardstick."""
    # imported here: torch must not load before a benchmark has set its instruction-set cap
    import torch
    from bench_lenet import bare_epoch, mnist_train, settings
    from hydra.utils import instantiate

    from hybridlearn.core.loaders import tensor_loader

    x, y = mnist_train(batch_size)
    torch.manual_seed(0)
    net = instantiate(settings(batch_size).model.net)
    return bare_epoch(net, tensor_loader(x, y, batch_size=batch_size, shuffle=True, seed=0), 2e-3)


def yardstick_section(threads: int, where: str = "") -> list[str]:
    """The results file's yardstick section: one bare LeNet-5 epoch measured now (`where`: e.g. "under
    the same cap"), printed as it is measured."""
    epoch_s = lenet_epoch_s()
    print(f"yardstick: one bare LeNet-5 epoch {epoch_s:.2f} s", flush=True)
    return [
        "## Yardstick of the machine",
        "",
        f"One bare LeNet-5 epoch (MNIST train split, batch 128, bench_lenet.py's bare loop){where}: "
        f"**{epoch_s:.2f} s** ({threads} threads). Compare machines by this before comparing frames/s.",
        "",
    ]

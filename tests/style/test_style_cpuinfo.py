"""precision=auto on CPU: bf16 only where the CPU has bf16 dot products AND neither oneDNN's ISA
cap (ONEDNN_MAX_CPU_ISA) nor ATen's (ATEN_CPU_CAPABILITY) rules them out (style/cpuinfo.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from hybridlearn.style import cpuinfo
from hybridlearn.style.cpuinfo import native_bf16, onednn_isa_cap
from hybridlearn.style.stylize import style_model

BF16 = frozenset({"avx2", "avx512f", "avx512_bf16"})
AMX = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"})
NO_BF16 = frozenset({"avx2", "avx512f", "avx512_vnni"})


@pytest.mark.parametrize(
    ("flags", "cap", "aten", "want"),
    [
        (BF16, None, "AVX512", True),
        (AMX, None, "AVX512", True),
        (NO_BF16, None, "AVX512", False),  # emulated bf16: slower than fp32
        (BF16, "AVX2", "AVX512", False),  # oneDNN capped below bf16
        (BF16, "AVX512_CORE", "AVX512", False),
        (BF16, "AVX512_CORE_VNNI", "AVX512", False),
        (BF16, "AVX2_VNNI_2", "AVX512", False),  # (bf16 conversions only, no bf16 dot products)
        (BF16, "AVX512_CORE_BF16", "AVX512", True),
        (AMX, "AVX512_CORE_AMX", "AVX512", True),
        (AMX, "AVX10_1_512_AMX_FP16", "AVX512", True),
        (BF16, "NOT_AN_ISA", "AVX512", False),  # unknown cap: the safe side
        (BF16, None, "AVX2", False),  # ATen's element-wise kernels capped at AVX2
        (BF16, None, "DEFAULT", False),
        (frozenset(), None, "AVX512", False),  # no /proc/cpuinfo (not Linux)
    ],
)
def test_native_bf16_honours_the_caps(flags, cap, aten, want):
    assert native_bf16(flags, cap, aten) is want


def test_onednn_cap_from_the_environment():
    assert onednn_isa_cap({}) is None
    assert onednn_isa_cap({"ONEDNN_MAX_CPU_ISA": "avx2"}) == "AVX2"
    assert onednn_isa_cap({"DNNL_MAX_CPU_ISA": "AVX512_CORE"}) == "AVX512_CORE"  # the older name
    assert onednn_isa_cap({"ONEDNN_MAX_CPU_ISA": "ALL"}) is None
    assert onednn_isa_cap({"ONEDNN_MAX_CPU_ISA": "avx2", "DNNL_MAX_CPU_ISA": "ALL"}) == "AVX2"


def test_cpu_flags_read_from_proc_cpuinfo(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nvendor_id\t: X\nflags\t\t: fpu sse avx2 avx512_bf16\n\nprocessor\t: 1\n")
    assert cpuinfo.cpu_flags(str(f)) == {"fpu", "sse", "avx2", "avx512_bf16"}
    assert cpuinfo.cpu_flags(str(tmp_path / "none")) == frozenset()


def test_precision_auto_under_onednn_cap(data_dir, tmp_path, monkeypatch):
    """On a CPU with AVX512_BF16, auto picks bf16, but not under ONEDNN_MAX_CPU_ISA=AVX2."""
    monkeypatch.setattr(cpuinfo, "cpu_flags", lambda path="/proc/cpuinfo": BF16)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    m = style_model("starry_night.jpg", cache_dir=str(tmp_path))
    assert m.compute_dtype == torch.bfloat16
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert m.compute_dtype == torch.float32
    bf16 = style_model("starry_night.jpg", cache_dir=str(tmp_path), precision="bf16")
    assert bf16.compute_dtype == torch.bfloat16  # an explicit choice is kept


def test_aten_cpu_capability_cap_in_a_fresh_interpreter():
    """ATEN_CPU_CAPABILITY is read by torch at start-up: the public get_cpu_capability() shows it."""
    code = (
        "import torch; from hybridlearn.style.cpuinfo import cpu_has_fast_bf16\n"
        "print(torch.backends.cpu.get_cpu_capability(), cpu_has_fast_bf16())"
    )
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    cap, fast = out.stdout.split()
    assert fast == "False" and cap in ("AVX2", "DEFAULT")

"""Does this CPU run bf16 convolutions natively? (`model.precision=auto` on CPU)

From public information only: the CPU's flags in /proc/cpuinfo (Linux), the ISA cap a user may put
on oneDNN (`ONEDNN_MAX_CPU_ISA`, or its older name `DNNL_MAX_CPU_ISA`), and ATen's CPU capability
(`torch.backends.cpu.get_cpu_capability()`, which honours `ATEN_CPU_CAPABILITY`). bf16 is native
where the CPU has AVX512_BF16 or AMX-BF16 dot products, oneDNN may use them (its cap is at least
AVX512_CORE_BF16) and ATen's element-wise kernels are the AVX-512 ones; elsewhere bf16 is
emulated and slower than fp32 (6.6x measured on a CPU without it).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

# oneDNN's ISA names (dnnl_cpu_isa_t, see its docs) -> their bit masks; an ISA includes another
# when its mask has all of the other's bits
ONEDNN_ISA = {
    "SSE41": 0x1,
    "AVX": 0x3,
    "AVX2": 0x7,
    "AVX2_VNNI": 0xF,
    "AVX2_VNNI_2": 0x1F,
    "AVX512_CORE": 0x27,
    "AVX512_CORE_VNNI": 0x67,
    "AVX512_CORE_BF16": 0xE7,
    "AVX10_1_512": 0x1EF,
    "AVX512_CORE_FP16": 0x1EF,
    "AVX10_1_512_AMX": 0xFEF,
    "AVX512_CORE_AMX": 0xFEF,
    "AVX10_1_512_AMX_FP16": 0x1FEF,
    "AVX512_CORE_AMX_FP16": 0x1FEF,
}
BF16_ISA = ONEDNN_ISA["AVX512_CORE_BF16"]
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo names


@functools.cache
def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The first processor's flags (empty where there is no /proc/cpuinfo)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def onednn_isa_cap(env: dict | None = None) -> str | None:
    """The cap on oneDNN's ISA set in the environment (upper case), None when there is none."""
    env = os.environ if env is None else env
    cap = env.get("ONEDNN_MAX_CPU_ISA") or env.get("DNNL_MAX_CPU_ISA")
    cap = cap.strip().upper() if cap else None
    return None if cap in (None, "", "ALL", "DEFAULT") else cap


def native_bf16(flags: frozenset[str] | set[str], onednn_cap: str | None, aten_capability: str) -> bool:
    """bf16 dot products in hardware, allowed by oneDNN's cap and ATen's capability (module doc).
    An unknown oneDNN cap name counts as a cap below bf16 (the safe side: fp32)."""
    if not any(f in flags for f in BF16_FLAGS):
        return False
    if onednn_cap is not None and (ONEDNN_ISA.get(onednn_cap, 0) & BF16_ISA) != BF16_ISA:
        return False
    return aten_capability.upper().startswith("AVX512")


def cpu_has_fast_bf16() -> bool:
    """native_bf16 for this machine and environment."""
    return native_bf16(cpu_flags(), onednn_isa_cap(), torch.backends.cpu.get_cpu_capability())

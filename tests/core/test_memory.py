"""malloc_keep_mb (core/memory.py): freed blocks stay in the heap for the next batch instead of
going back to the kernel (and page-faulting in again)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compose_cfg

from hybridlearn.core.errors import ConfigError
from hybridlearn.core.memory import DEFAULT_KEEP_MB, _libc, keep_freed_memory
from hybridlearn.core.settings import check_settings

ROOT = Path(__file__).resolve().parents[2]

# RSS after a 24 MiB block is written and freed, in a fresh interpreter (glibc's moving threshold
# starts at 128 KiB there, so by default the block is mmap'd and unmapped on free)
PROBE = """
import os, sys
from hybridlearn.core.settings import check_settings
from hybridlearn.core.memory import keep_freed_memory
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20
applied = keep_freed_memory(int(sys.argv[1]) if sys.argv[1] != "none" else None)
before = rss()
block = bytearray(b"x") * (24 << 20)
held = rss()
del block
print(applied, held - before, rss() - before)
"""


def _probe(keep: str) -> tuple[bool, int, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, keep],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    ).stdout.split()
    return out[0] == "True", int(out[1]), int(out[2])


@pytest.mark.skipif(_libc() is None, reason="glibc only")
def test_freed_memory_is_kept_only_when_asked():
    applied, held, after = _probe(str(DEFAULT_KEEP_MB))
    assert applied and held >= 20
    assert after >= 20, "the freed block went back to the kernel"
    applied, held, after = _probe("none")
    assert not applied and held >= 20
    assert after <= 4, "glibc's default unmaps a freed 24 MiB block"


def test_none_leaves_malloc_alone():
    assert keep_freed_memory(None) is False


@pytest.mark.parametrize("bad", [-1, 1.5, "lots", True])
def test_malloc_keep_mb_is_checked(bad, tmp_path):
    """A negative size is refused by its range, a non-integer by its type (while Hydra composes)."""
    with pytest.raises(Exception, match="malloc_keep_mb") as e:
        check_settings(compose_cfg(["experiment=lenet_mnist", f"malloc_keep_mb={bad}"], tmp_path))
    assert bad != -1 or e.type is ConfigError
    for good in ("null", 0, 512):
        cfg = compose_cfg(["experiment=lenet_mnist", f"malloc_keep_mb={good}"], tmp_path)
        check_settings(cfg)
        assert cfg.malloc_keep_mb == (None if good == "null" else good)


def test_default_is_glibcs_and_style_video_keeps_256(tmp_path):
    """Most runs leave malloc alone; the video stream (large CPU batches) keeps DEFAULT_KEEP_MB."""
    assert compose_cfg(["experiment=lenet_mnist"], tmp_path).malloc_keep_mb is None
    assert compose_cfg(["experiment=style_video"], tmp_path).malloc_keep_mb == DEFAULT_KEEP_MB

"""How many cores other processes keep busy, measured from /proc (Linux).

`model.threads=auto` asks this instead of the load average: the 1-minute load average still
counts this process's own past work, or the run before it, for a minute (a second `stylize` right
after a first one saw load ~2 on a quiet 2-core machine and fell back to one thread).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CpuSample:
    at: float  # time.monotonic()
    busy: int  # all CPUs' non-idle jiffies since boot
    own: int  # this process's user + system jiffies (all its threads)


def sample() -> CpuSample | None:
    """None where /proc is not there (not Linux)."""
    try:
        cpu = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[11:13]
    except (OSError, IndexError):
        return None
    ticks = [int(v) for v in cpu]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return CpuSample(time.monotonic(), sum(ticks[:8]) - idle, int(own[0]) + int(own[1]))


def others_busy_cores(since: CpuSample | None, min_window_s: float = 0.1) -> float | None:
    """Cores used by other processes from `since` to now (waits until the window is min_window_s
    long); None without /proc."""
    if since is None:
        return None
    time.sleep(max(0.0, min_window_s - (time.monotonic() - since.at)))
    now = sample()
    if now is None:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    return max(0.0, (now.busy - since.busy) - (now.own - since.own)) / hz / (now.at - since.at)

"""Small-sample statistics: mean ± std with a Student-t interval (runs over seeds or folds), Wilson
score intervals for accuracies, expected calibration error."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, sample std, low, high) of a few runs' values (seeds, folds): the Student-t interval of
    the mean, as wide as n runs warrant (n = 3: +-2.48 std). One value: std 0 and no interval (nan)."""
    from scipy.stats import t  # the quantile only; scipy is slow to import

    v = [float(x) for x in values]
    if not v:
        raise ValueError("t_interval needs at least one value")
    mean = statistics.fmean(v)
    if len(v) == 1:
        return mean, 0.0, math.nan, math.nan
    std = statistics.stdev(v)
    half = float(t.ppf(0.5 + level / 2, len(v) - 1)) * std / math.sqrt(len(v))
    return mean, std, mean - half, mean + half


def spread_text(mean: float, std: float, low: float = math.nan, high: float = math.nan) -> str:
    """ "m ± s [low, high]" with every number to the decimal of the std's second significant digit
    (0.99200 ± 0.00083, not 0.992 ± 0.0008276): digits beyond the spread are noise. A zero or
    missing std keeps 4 significant digits; a missing interval is left out."""
    if std > 0 and math.isfinite(std):
        d = max(0, 1 - math.floor(math.log10(std)))
        num = f"{{:.{d}f}}".format
    else:
        num = "{:.4g}".format
    text = f"{num(mean)} ± {num(std)}"
    return text + (f" [{num(low)}, {num(high)}]" if math.isfinite(low) and math.isfinite(high) else "")


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % (z = 1.96) Wilson score interval of an accuracy `correct`/`n`: unlike mean ± 2 SE it
    stays inside [0, 1] and is honest near 1, where a test split of ~120 digits puts most results."""
    if n <= 0:
        raise ValueError(f"wilson_interval needs n > 0 (got {n})")
    if not 0 <= correct <= n:
        raise ValueError(f"wilson_interval needs 0 <= correct <= n (got {correct}, {n})")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float:
    """ECE: the mean over equal-width confidence bins of |accuracy - mean confidence|, weighted by
    the bin's share of the predictions (Guo et al. 2017). 0 = the printed confidences are the
    observed accuracies."""
    import numpy as np  # (this module stays light: the multirun callback loads it at every start)

    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    if conf.shape != ok.shape or conf.ndim != 1 or len(conf) == 0:
        raise ValueError("expected_calibration_error needs equally long, non-empty 1-D inputs")
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)  # (0, 1/bins] -> bin 0
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(ok[m].mean() - conf[m].mean())
    return float(ece)

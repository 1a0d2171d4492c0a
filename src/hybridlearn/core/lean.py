"""Optional packages kept out of a run's start-up: the `skip_imports` list of the config.

`import lightning` imports torchmetrics, and torchmetrics imports every optional package it finds
installed: scipy.signal, torchvision (its models and ops), matplotlib. On two cores that was about
1.3 s of the `stylize` command's 5.4 s to its first frame, for metrics a run never computes. A run
that lists them imports the run flow (`core.runner`: Lightning, torchmetrics) while they look not
installed, to the import system and to importlib.metadata, so torchmetrics leaves out the metrics
that need them. Afterwards they import as usual; torchmetrics keeps its answer for the process.
"""

from __future__ import annotations

import importlib.abc
import importlib.metadata
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _top(name: str) -> str:
    return re.sub(r"[-.]+", "_", name.split(".")[0]).lower()


class _Hidden(importlib.abc.MetaPathFinder):
    """First on sys.meta_path: the hidden packages are not found, neither as modules nor as
    installed distributions (what torchmetrics' and Lightning's availability checks ask)."""

    def __init__(self, names: Iterable[str]):
        self.names = frozenset(_top(n) for n in names)

    def find_spec(self, name, path=None, target=None):
        if _top(name) in self.names:
            raise ModuleNotFoundError(f"No module named {name!r} (skip_imports)", name=name)
        return None

    def find_distributions(self, context=importlib.metadata.DistributionFinder.Context()):
        if context.name is not None and _top(context.name) in self.names:
            raise importlib.metadata.PackageNotFoundError(context.name)
        return iter(())


def check_names(names: Iterable[str]) -> list[str]:
    """The `skip_imports` names, or ValueError naming the bad one (core.config words it)."""
    out = []
    for n in names:
        if not isinstance(n, str) or not _NAME.match(n):
            raise ValueError(f"{n!r} is not a top-level package name")
        out.append(n)
    return out


@contextmanager
def hidden_packages(names: Iterable[str]) -> Iterator[None]:
    """Within the block, importing `names` (top-level packages) fails as if they were not installed;
    one already imported stays as it is."""
    finder = _Hidden(n for n in names if n not in sys.modules)
    if not finder.names:
        yield
        return
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)

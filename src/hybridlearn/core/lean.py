"""What a run's start-up leaves out of the run flow's import (`core.runner`: Lightning, torchmetrics).

`skip_imports`: `import lightning` imports torchmetrics, and torchmetrics imports every optional
package it finds installed: scipy.signal, torchvision (its models and ops), matplotlib. On two cores
that was about 1.3 s of the `stylize` command's 5.4 s to its first frame, for metrics a run never
computes. A run that lists them imports the run flow while they look not installed, to the import
system and to importlib.metadata, so torchmetrics leaves out the metrics that need them. Afterwards
they import as usual; torchmetrics keeps its answer for the process.

`defer_dynamo`: Lightning (2.6.6, fabric/wrappers.py) imports torch._dynamo at import time, only to
recognize compiled models and to mark two logging methods as not compiled; that is ~1.1 s of a
2-core start-up (torch itself stopped importing it, pytorch/pytorch#162595). While the run flow is
imported, torch._dynamo is a stand-in that has just those two names, both deferring to the real
module once anything (torch.compile) imports it. torchvision needs the real module at import, so
this pays only beside `skip_imports: [torchvision, ...]` (style_video); otherwise it is a clear error.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.metadata
import re
import sys
import types
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from hybridlearn.core.errors import ConfigError

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


# ------------------------------------------------------------------------------ torch._dynamo
_DYNAMO = "torch._dynamo"


def _real_dynamo() -> types.ModuleType | None:
    """torch._dynamo once it is really imported (not the stand-in), else None."""
    mod = sys.modules.get(_DYNAMO)
    return None if mod is None or isinstance(mod, _DynamoStandIn) else mod


def _real_optimized_module() -> type | None:
    return getattr(_real_dynamo(), "OptimizedModule", None)


class _DeferredCheck(type):
    """isinstance/issubclass against the real OptimizedModule once it exists. Before torch._dynamo
    is imported nothing can be one (torch.compile imports it), so the answer is no, without importing."""

    def __instancecheck__(cls, obj) -> bool:
        real = _real_optimized_module()
        return real is not None and isinstance(obj, real)

    def __subclasscheck__(cls, sub) -> bool:
        real = _real_optimized_module()
        return real is not None and issubclass(sub, real)


class OptimizedModule(metaclass=_DeferredCheck):
    """What Lightning's `from torch._dynamo import OptimizedModule` gets inside `deferred_dynamo()`."""


def _deferred_disable(fn=None, recursive=True, *, reason=None):
    """torch.compiler.disable (Lightning decorates two logging methods with it at import): the function
    runs as is until torch._dynamo is imported, and from then on through torch._dynamo.disable.
    Only what torch.compile traces is affected, and nothing is compiled before that import."""
    if fn is None:
        return functools.partial(_deferred_disable, recursive=recursive, reason=reason)
    disabled = None

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        nonlocal disabled
        if disabled is None:
            mod = _real_dynamo()
            if mod is None:
                return fn(*args, **kwargs)
            disabled = mod.disable(fn, recursive, reason=reason)
        return disabled(*args, **kwargs)

    return wrapper


class _DynamoStandIn(types.ModuleType):
    """torch._dynamo while the run flow is imported: OptimizedModule and disable, and nothing else,
    so whatever else an import asks of it fails loudly (`asked`: what was asked, for the tests)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.asked: set[str] = set()

    def __getattr__(self, name: str):
        self.asked.add(name)
        if name == "OptimizedModule":
            return OptimizedModule
        if name == "disable":
            return _deferred_disable
        raise AttributeError(f"{_DYNAMO} is deferred while the run flow is imported (defer_dynamo); {name!r} asked")


@contextmanager
def deferred_dynamo(enabled: bool = True) -> Iterator[None]:
    """Within the block, `torch._dynamo` is the stand-in (unless already imported); afterwards
    `import torch._dynamo` imports the real module, and the stand-in's two names defer to it."""
    if not enabled or _DYNAMO in sys.modules:
        yield
        return
    stand_in = _DynamoStandIn(_DYNAMO)
    sys.modules[_DYNAMO] = stand_in
    try:
        yield
    except Exception as e:  # ImportError, AttributeError, or either worded by core.cli.load_entry
        if _DYNAMO not in str(e):
            raise
        raise ConfigError(
            f"defer_dynamo=true, but an import needs torch._dynamo itself ({e}); set defer_dynamo=false, "
            "or list the package that imports it in skip_imports (torchvision does)"
        ) from e
    finally:
        if sys.modules.get(_DYNAMO) is stand_in:
            del sys.modules[_DYNAMO]

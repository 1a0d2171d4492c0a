"""skip_imports (core/lean.py): packages a run does not use look not installed while the run flow
is imported, and import as usual afterwards."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from hybridlearn.core.config import validate
from hybridlearn.core.errors import ConfigError
from hybridlearn.core.lean import deferred_dynamo, hidden_packages


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """An installed package `hl_fake_pkg` (module + dist-info) that nothing has imported yet."""
    (tmp_path / "hl_fake_pkg").mkdir()
    (tmp_path / "hl_fake_pkg" / "__init__.py").write_text("VALUE = 7\n")
    info = tmp_path / "hl_fake_pkg-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hl-fake-pkg\nVersion: 1.2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield "hl_fake_pkg"
    for name in [m for m in sys.modules if m.startswith("hl_fake_pkg")]:
        del sys.modules[name]


def test_hidden_package_fails_as_if_not_installed(fake_package):
    with hidden_packages([fake_package]):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(fake_package)
        with pytest.raises(ModuleNotFoundError):  # what torchmetrics' package_available() asks
            importlib.util.find_spec(fake_package)
        with pytest.raises(importlib.metadata.PackageNotFoundError):
            importlib.metadata.version("hl-fake-pkg")  # (the distribution's name, with a dash)
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(f"{fake_package}.sub")
    assert importlib.import_module(fake_package).VALUE == 7
    assert importlib.metadata.version("hl-fake-pkg") == "1.2"
    with hidden_packages([fake_package]):  # already imported: left as it is
        assert importlib.import_module(fake_package).VALUE == 7


@pytest.mark.parametrize("bad", ["scipy", ["sci py"], [3], {"a": 1}])
def test_skip_imports_must_be_a_list_of_package_names(bad):
    cfg = OmegaConf.create({"task": "fit", "seed": 1, "skip_imports": bad})
    with pytest.raises(ConfigError, match="skip_imports"):
        validate(cfg)
    validate(OmegaConf.create({"task": "fit", "seed": 1, "skip_imports": ["scipy", "torchvision"]}))


# ------------------------------------------------------------------------------ defer_dynamo
DEFERRED_RUN_FLOW = """
import sys, torch
from hybridlearn.core.lean import deferred_dynamo, hidden_packages
with hidden_packages(["torchvision"]), deferred_dynamo():
    stand_in = sys.modules["torch._dynamo"]
    import hybridlearn.core.runner

    @torch.compiler.disable  # as Lightning marks its logging methods
    def traced(x):  # 1 where torch.compile traces it, 0 where it runs as plain Python
        return x + (1 if torch.compiler.is_compiling() else 0)
print("AFTER_IMPORT", "torch._dynamo" in sys.modules, sorted(n for n in stand_in.asked if not n.startswith("__")))
print("EAGER", traced(torch.zeros(1)).item())

import lightning as L
from lightning.fabric.wrappers import _unwrap_compiled
from lightning.pytorch.utilities.compile import _maybe_unwrap_optimized  # what Trainer.fit/predict call
class Net(L.LightningModule):
    def forward(self, x):
        return x + 1

net = Net()
print("PLAIN", _unwrap_compiled(net)[0] is net, _maybe_unwrap_optimized(net) is net)
compiled = torch.compile(net, backend="eager")  # imports the real torch._dynamo
print("COMPILED", _unwrap_compiled(compiled)[0] is net, _maybe_unwrap_optimized(compiled) is net)
print("IN_COMPILED", torch.compile(lambda x: traced(x) * 1, backend="eager")(torch.zeros(1)).item())
"""


def test_deferred_dynamo_keeps_it_out_of_the_import_and_defers_to_it_after():
    """In a fresh interpreter (the tests' own has torch._dynamo loaded): the run flow imports without
    torch._dynamo, asking the stand-in only its two names; afterwards compiled models are recognized
    by Lightning and a function marked with torch.compiler.disable in the window is not traced."""
    p = subprocess.run([sys.executable, "-c", DEFERRED_RUN_FLOW], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    out = dict(line.split(" ", 1) for line in p.stdout.splitlines() if line[:1].isupper())
    assert out["AFTER_IMPORT"] == "False ['OptimizedModule', 'disable']"
    assert out["EAGER"] == "0.0"
    assert out["PLAIN"] == "True True"
    assert out["COMPILED"] == "True True"
    assert out["IN_COMPILED"] == "0.0"  # not traced (without the decorator: 1.0)


def test_deferred_dynamo_leaves_a_loaded_dynamo_alone():
    import torch._dynamo  # noqa: F401  (loaded in the tests' interpreter anyway)

    real = sys.modules["torch._dynamo"]
    with deferred_dynamo():
        assert sys.modules["torch._dynamo"] is real
    with deferred_dynamo(enabled=False):
        assert sys.modules["torch._dynamo"] is real


def test_deferred_dynamo_names_the_fix_when_an_import_needs_the_real_module():
    code = (
        "from hybridlearn.core.lean import deferred_dynamo\n"
        "with deferred_dynamo():\n"
        "    import torch._dynamo.utils  # what torchvision.ops does\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode != 0
    assert "ConfigError: defer_dynamo=true, but an import needs torch._dynamo itself" in p.stderr
    assert "set defer_dynamo=false, or list the package that imports it in skip_imports" in p.stderr


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_defer_dynamo_must_be_a_bool(bad):
    with pytest.raises(ConfigError, match="defer_dynamo"):
        validate(OmegaConf.create({"task": "fit", "seed": 1, "defer_dynamo": bad}))

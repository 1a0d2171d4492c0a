"""skip_imports (core/lean.py): packages a run does not use look not installed while the run flow
is imported, and import as usual afterwards."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys

import pytest
from omegaconf import OmegaConf

from hybridlearn.core.config import validate
from hybridlearn.core.errors import ConfigError
from hybridlearn.core.lean import hidden_packages


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

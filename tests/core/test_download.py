"""Download path against a local HTTP server on 127.0.0.1 serving the shared data folder."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading

import pytest

from hybridlearn.core.download import ensure_files, md5sum
from hybridlearn.core.errors import DataError
from hybridlearn.mnist.data import MNIST_FILES, load_mnist


@pytest.fixture
def http_root(tmp_path, data_dir):
    """Serve a folder (initially a copy-free view: symlinks to the shared MNIST files)."""
    root = tmp_path / "www"
    (root / "mnist").mkdir(parents=True)
    for name in MNIST_FILES:
        (root / "mnist" / name).symlink_to(data_dir / "mnist" / name)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/mnist/"
    server.shutdown()


def test_download_from_mirror_then_load(http_root, tmp_path, data_dir):
    _, url = http_root
    dest = tmp_path / "data"
    # the first mirror is dead: the second one serves the files
    raw = load_mnist(dest, mirrors=["http://127.0.0.1:9/dead/", url], timeout=5)
    for name, md5 in MNIST_FILES.items():
        assert md5sum(dest / "mnist" / name) == md5
    assert raw["train_x"].shape == (60000, 28, 28) and raw["test_y"].shape == (10000,)
    assert raw["train_y"].bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert abs(raw["train_x"].double().mean().item() - 33.3184) < 1e-3
    assert not list((dest / "mnist").glob(".*tmp*"))  # no temp files left behind


def test_truncated_download_rejected(http_root, tmp_path, data_dir):
    root, url = http_root
    name = "t10k-labels-idx1-ubyte.gz"
    target = root / "mnist" / name
    target.unlink()
    target.write_bytes((data_dir / "mnist" / name).read_bytes()[:1000])  # truncated on the server
    dest = tmp_path / "data"
    with pytest.raises(DataError) as e:
        ensure_files(dest, {name: MNIST_FILES[name]}, {name: [url + name]}, what="MNIST", timeout=5)
    assert "md5" in str(e.value) and name in str(e.value)
    assert not (dest / name).exists()  # the bad download never lands
    assert not list(dest.glob("*"))


def test_corrupt_local_file_named(tmp_path, data_dir):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in MNIST_FILES:
        shutil.copyfile(data_dir / "mnist" / name, folder / name) if "labels" in name else (folder / name).symlink_to(
            data_dir / "mnist" / name
        )
    bad = folder / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: md5 .* does not match"):
        load_mnist(tmp_path, mirrors=[])
    assert bad.exists()  # a user's file is never deleted


def test_missing_files_name_folder_and_data_dir(tmp_path):
    with pytest.raises(DataError) as e:
        load_mnist(tmp_path / "nowhere", mirrors=[])
    msg = str(e.value)
    assert str(tmp_path / "nowhere" / "mnist") in msg and "DATA_DIR" in msg
    assert all(name in msg for name in MNIST_FILES)


def test_atomic_output_has_usual_mode_and_refuses_overwrite(tmp_path):
    import os

    from hybridlearn.core.errors import ConfigError
    from hybridlearn.core.io import atomic_output

    umask = os.umask(0o022)
    try:
        target = tmp_path / "out.txt"
        with atomic_output(target) as tmp:
            tmp.write_text("x")
        assert target.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
        with pytest.raises(ConfigError, match="already exists"):
            with atomic_output(target, overwrite=False):
                pass
        assert target.read_text() == "x" and len(list(tmp_path.iterdir())) == 1
    finally:
        os.umask(umask)

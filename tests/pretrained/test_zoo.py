"""The zoo: cache location, download from a local HTTP server (hash checked), offline help, default model."""
from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import socket
import threading

import pytest
from pretrained import tiny_torchvision
from pretrained.pth_writer import write_pth

from detkit.errors import CheckpointError, DetkitError
from detkit.pretrained import zoo


@pytest.fixture
def home(tmp_path, monkeypatch):
    directory = tmp_path / "home"
    monkeypatch.setenv(zoo.HOME_VARIABLE, str(directory))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    tiny_torchvision.install(monkeypatch)
    return directory


@pytest.fixture
def served(tmp_path):
    """A local HTTP server over tmp_path/www: yields (www dir, base URL); counts the GET requests."""
    www = tmp_path / "www"
    www.mkdir()
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def _publish(www, tmp_path, name_hash=None) -> str:
    """A tiny 90-class .pth in www named like torchvision's files, NAME-<sha256 prefix>.pth."""
    staging = tmp_path / "staging.pth"
    write_pth(str(staging), tiny_torchvision.tiny_state(90))
    digest = hashlib.sha256(staging.read_bytes()).hexdigest()
    name = f"tiny_coco-{name_hash or digest[:8]}.pth"
    shutil.move(str(staging), str(www / name))
    return name


def _register(monkeypatch, name: str, url: str) -> None:
    monkeypatch.setitem(zoo.MODELS, name, zoo.ZooModel(name, "tiny", url, 1.0, "tiny test model"))


def test_cache_dir_follows_detkit_home(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.HOME_VARIABLE, str(tmp_path / "h"))
    assert zoo.model_dir("fast") == str(tmp_path / "h" / "models" / "fast")
    monkeypatch.delenv(zoo.HOME_VARIABLE)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert zoo.cache_dir() == str(tmp_path / "user" / ".cache" / "detkit")


def test_registry_matches_torchvision_names():
    assert zoo.MODELS["accurate"].filename == "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"
    assert zoo.MODELS["fast"].arch == "fasterrcnn_mobilenet_v3_large_320_fpn"
    assert zoo.expected_hash_prefix(zoo.MODELS["fast"].url) == "907ea3f9"
    assert zoo.expected_hash_prefix("https://x/y/plain.pth") is None


def test_download_imports_into_the_cache_then_needs_no_network(home, served, tmp_path, monkeypatch):
    www, base, hits = served
    name = _publish(www, tmp_path)
    _register(monkeypatch, "fast", f"{base}/{name}")
    (home / "downloads").mkdir(parents=True)
    partial = home / "downloads" / f".{name}.tmp-999999999"  # left by a killed download (no such process)
    partial.write_bytes(b"half")
    logs = []
    run_dir = zoo.download("fast", show_progress=True, log=logs.append)
    assert run_dir == str(home / "models" / "fast")
    assert sorted(os.listdir(run_dir)) == ["checkpoints", "classes.json", "config.yml", "imported.json"]
    assert not (home / "downloads").exists()  # the .pth is gone once imported, the partial one too
    assert zoo.is_downloaded("fast") and [m.name for m in zoo.downloaded()] == ["fast"]
    assert zoo.default_model() == ("fast", run_dir)
    assert hits == [f"/{name}"]
    assert zoo.download("fast", log=logs.append) == run_dir
    assert hits == [f"/{name}"] and logs[-1] == f"fast is already downloaded: {run_dir}"


def test_default_prefers_accurate(home, served, tmp_path, monkeypatch):
    www, base, _ = served
    name = _publish(www, tmp_path)
    for model in ("fast", "accurate"):
        _register(monkeypatch, model, f"{base}/{name}")
        zoo.download(model, show_progress=False)
    assert zoo.default_model() == ("accurate", str(home / "models" / "accurate"))


def test_wrong_hash_keeps_nothing(home, served, tmp_path, monkeypatch):
    www, base, _ = served
    name = _publish(www, tmp_path, name_hash="deadbeef")
    _register(monkeypatch, "fast", f"{base}/{name}")
    with pytest.raises(CheckpointError, match="SHA-256 does not start with deadbeef"):
        zoo.download("fast", show_progress=False)
    assert os.listdir(home / "downloads") == []
    assert not zoo.is_downloaded("fast") and not (home / "models").exists()


def test_offline_names_the_url_and_the_import_command(home, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth"
    _register(monkeypatch, "fast", url)
    with pytest.raises(DetkitError) as info:
        zoo.download("fast", show_progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"cannot download {url} (")
    assert message.endswith("fetch it by hand, then run: detkit checkpoint import "
                            "fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth --output "
                            f"{home / 'models' / 'fast'} --arch tiny --classes coco")


def test_a_server_that_never_answers_times_out(home, monkeypatch):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # connections complete in the kernel, nobody answers
    try:
        _register(monkeypatch, "fast", f"http://127.0.0.1:{listener.getsockname()[1]}/m-907ea3f9.pth")
        monkeypatch.setattr(zoo, "TIMEOUT_SECONDS", 0.5)
        with pytest.raises(DetkitError, match=r"cannot download .*timed out.*fetch it by hand"):
            zoo.download("fast", show_progress=False)
    finally:
        listener.close()


def test_reuses_torch_hub_copy(home, tmp_path, monkeypatch):
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    name = _publish(hub, tmp_path)
    _register(monkeypatch, "fast", f"http://127.0.0.1:9/{name}")  # never contacted
    logs = []
    zoo.download("fast", log=logs.append)
    assert zoo.is_downloaded("fast") and (hub / name).exists()
    assert logs[0] == f"using {hub / name}"


def test_no_downloaded_model_names_the_download_command(home):
    with pytest.raises(CheckpointError, match="no downloaded model: `detkit checkpoint download accurate`"):
        zoo.default_model()
    with pytest.raises(DetkitError, match="unknown model 'big' \\(choose from accurate, mobile, fast\\)"):
        zoo.download("big")

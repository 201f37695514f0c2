"""`detkit server web` as a command: lazy imports, one-line errors, bind checks, the web extra."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from server_helpers import detkit_env, require_web_extra, running_server


def detkit(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "detkit", *args], capture_output=True, text=True,
                          timeout=timeout, env=detkit_env())


def test_help_imports_neither_tensorflow_nor_the_web_framework():
    code = ("import sys; from detkit.cli.main import cli\n"
            "try:\n    cli.main(['server', 'web', '--help'], standalone_mode=False)\n"
            "finally:\n    print('LOADED', sorted(m for m in ('tensorflow', 'fastapi', 'uvicorn', 'starlette')"
            " if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=detkit_env())
    assert done.returncode == 0, done.stderr
    assert "--workers" in done.stdout and "--host" in done.stdout and "127.0.0.1" in done.stdout
    assert "LOADED []" in done.stdout


def test_no_checkpoint_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DETKIT_HOME", str(tmp_path / "no-models"))
    done = detkit("server", "web", "--port", "0")
    assert done.returncode == 1
    assert done.stderr.strip().startswith("detkit: error: no checkpoint given") and "Traceback" not in done.stderr
    assert "`detkit checkpoint download accurate`" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_serves_the_downloaded_model_by_default(zoo_home, tmp_path):
    import json
    import urllib.request

    require_web_extra()
    log = str(tmp_path / "server.log")
    with running_server([], log) as url:
        with urllib.request.urlopen(url + "api/classes", timeout=10) as response:
            assert json.load(response) == {"classes": ["raccoon"]}
    with open(log, encoding="utf-8") as fh:
        text = fh.read()
    assert f"detkit: using the downloaded model fast ({zoo_home})" in text
    assert "loaded fast (step 6)" in text


def test_missing_checkpoint_is_a_one_line_error(tmp_path):
    done = detkit("server", "web", "--checkpoint", str(tmp_path / "nothing"), "--port", "0")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("detkit: error:") and "nothing" in done.stderr


def test_busy_port_fails_before_the_model_is_loaded(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        # The checkpoint does not exist either: the port is checked first, in about a second.
        done = detkit("server", "web", "--checkpoint", str(tmp_path / "nothing"), "--port", str(port))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


def test_loopback_detection_and_url():
    from detkit.server.hosts import is_loopback
    from detkit.server.serve import bind_socket, url_of

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.3.2.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("example.org")
    sock = bind_socket("127.0.0.1", 0)
    try:
        assert url_of(sock).startswith("http://127.0.0.1:") and url_of(sock).endswith("/")
    finally:
        sock.close()


def test_missing_web_extra_names_the_install_command(monkeypatch):
    import importlib.util

    from detkit.errors import DetkitError
    from detkit.server import serve

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    with pytest.raises(DetkitError, match=r"pip install 'detkit\[web\]' \(missing: uvicorn\)"):
        serve.require_web_extra()

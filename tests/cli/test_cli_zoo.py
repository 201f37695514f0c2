"""`detkit checkpoint import / download / list` and predict's default downloaded model, through the real CLI."""
from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import threading

import numpy as np
import pytest
from pretrained import tiny_torchvision
from pretrained.pth_writer import Call, Global, write_pth

from detkit.pretrained import zoo


def _raccoon(raccoon_dir, n=1):
    return os.path.join(raccoon_dir, "images", f"raccoon-{n}.jpg")


def _records(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_import_prints_the_run_and_refuses_code_in_one_line(run_detkit, tmp_path, monkeypatch):
    tiny_torchvision.install(monkeypatch)
    pth = tmp_path / "tiny.pth"
    write_pth(str(pth), tiny_torchvision.tiny_state(2))
    out = tmp_path / "run"
    code, stdout, stderr = run_detkit("checkpoint", "import", pth, "--output", out, "--classes", "cat,dog")
    assert code == 0, stderr
    assert stdout == f"{out}\n" and f"imported {pth} into {out}" in stderr
    assert json.loads((out / "classes.json").read_text()) == ["cat", "dog"]

    code, _, stderr = run_detkit("checkpoint", "import", pth, "--output", tmp_path / "run2")
    assert code == 1
    assert stderr.strip() == (f"detkit: error: {pth}: the checkpoint has 2 classes (not COCO's 90); name them with "
                              "--classes a,b,... or --classes FILE (one name per line)")

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    write_pth(str(evil), {"w": np.ones(1, np.float32), "x": Call(Global("os", "system"), (f"touch {marker}",))})
    code, stdout, stderr = run_detkit("checkpoint", "import", evil, "--output", tmp_path / "run3")
    assert code == 1 and stdout == "" and not marker.exists() and not (tmp_path / "run3").exists()
    assert stderr.strip().splitlines() == [f"detkit: error: {evil}: refused to load os.system: a state dict holds "
                                           "only tensors, storages and ordered dicts, and this file names other code"]


def test_download_then_list_shows_the_model(run_detkit, tmp_path, monkeypatch):
    tiny_torchvision.install(monkeypatch)
    www = tmp_path / "www"
    www.mkdir()
    staging = tmp_path / "m.pth"
    write_pth(str(staging), tiny_torchvision.tiny_state(90))
    name = f"tiny-{hashlib.sha256(staging.read_bytes()).hexdigest()[:8]}.pth"
    staging.rename(www / name)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    home = tmp_path / "home"
    monkeypatch.setenv("DETKIT_HOME", str(home))
    monkeypatch.setitem(zoo.MODELS, "fast", zoo.ZooModel("fast", "tiny", f"http://127.0.0.1:{server.server_address[1]}/{name}",
                                                        22.8, "tiny"))
    monkeypatch.chdir(tmp_path)
    try:
        code, stdout, stderr = run_detkit("checkpoint", "download", "fast")
    finally:
        server.shutdown()
        server.server_close()
    assert code == 0, stderr
    assert stdout == f"{home / 'models' / 'fast'}\n"
    assert "downloading fast (tiny, COCO AP 22.8)" in stderr and "download" in stderr

    code, stdout, stderr = run_detkit("checkpoint", "list")
    assert code == 0
    assert "no runs under jobs" in stderr
    lines = stdout.splitlines()
    assert lines[0] == ""
    assert lines[1].startswith(f"downloaded models ({home};")
    assert lines[2].split() == ["MODEL", "ARCH", "COCO", "AP", "SIZE", "RUN"]
    assert lines[3].split()[:4] == ["fast", "*", "tiny", "22.8"] and lines[3].endswith(str(home / "models" / "fast"))

    code, stdout, _ = run_detkit("checkpoint", "list", "--json")
    (row,) = _records(stdout)
    assert row["model"] == "fast" and row["run_dir"] == str(home / "models" / "fast")
    assert [c["name"] for c in row["checkpoints"]] == ["ckpt-0"]

    code, _, stderr = run_detkit("checkpoint", "download", "huge")
    assert code == 1 and "unknown model 'huge' (choose from accurate, mobile, fast)" in stderr


def test_download_help_lists_the_models(run_detkit):
    code, stdout, _ = run_detkit("checkpoint", "download", "--help")
    assert code == 0
    for model in zoo.MODELS.values():
        assert f"{model.name:<9} {model.arch} (COCO box AP {model.coco_ap}" in stdout


def test_predict_uses_the_downloaded_model(run_detkit, zoo_home, raccoon_dir):
    code, stdout, stderr = run_detkit("predict", _raccoon(raccoon_dir), "--min-prob", "0")
    assert code == 0, stderr
    assert f"detkit: using the downloaded model fast ({zoo_home})" in stderr
    (record,) = _records(stdout)
    assert record["objects"] and {o["label"] for o in record["objects"]} == {"raccoon"}


@pytest.mark.parametrize("batch_size", [1, 2])
def test_unused_class_slots_are_never_reported(run_detkit, zoo_home, raccoon_dir, batch_size):
    images = [_raccoon(raccoon_dir, 1), _raccoon(raccoon_dir, 2)]
    code, stdout, _ = run_detkit("predict", *images, "--min-prob", "0", "--batch-size", batch_size)
    assert code == 0 and all(r["objects"] for r in _records(stdout))
    with open(os.path.join(zoo_home, "classes.json"), "w") as fh:
        json.dump(["N/A"], fh)  # the tiny model's only class is now an unused slot
    code, stdout, _ = run_detkit("predict", *images, "--min-prob", "0", "--batch-size", batch_size)
    assert code == 0
    assert [r["objects"] for r in _records(stdout)] == [[], []]


def test_exported_model_drops_unused_class_slots(zoo_home, raccoon_dir):
    from detkit.inference.detector import Detector
    from detkit.inference.export import DetectorModule

    detector = Detector.from_checkpoint(zoo_home)
    image = open(_raccoon(raccoon_dir), "rb").read()
    counts = {}
    for names in (["raccoon"], ["N/A"]):
        module = DetectorModule(detector.model, names, min_prob=0.0, max_detections=100)
        counts[names[0]] = int(module.serve(image)["num_detections"])
    assert counts["raccoon"] > 0 and counts["N/A"] == 0


def test_download_without_network_is_one_line(run_detkit, tmp_path, monkeypatch):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"
    monkeypatch.setitem(zoo.MODELS, "accurate", zoo.ZooModel("accurate", "fasterrcnn_resnet50_fpn", url, 37.0, ""))
    code, stdout, stderr = run_detkit("checkpoint", "download", "accurate", "--no-progress",
                                      env={"DETKIT_HOME": str(tmp_path / "home")})
    assert code == 1 and stdout == ""
    error = [line for line in stderr.splitlines() if line.startswith("detkit: error:")]
    assert len(error) == 1 and "Traceback" not in stderr
    assert error[0].startswith(f"detkit: error: cannot download {url} (")
    assert error[0].endswith("then run: detkit checkpoint import fasterrcnn_resnet50_fpn_coco-258fb6c6.pth --output "
                             f"{tmp_path / 'home' / 'models' / 'accurate'} --arch fasterrcnn_resnet50_fpn --classes coco")

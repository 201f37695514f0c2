"""Commands replace or delete only what they can prove they made; anything else is refused in one line."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess

import pytest


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("detkit: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0][len("detkit: error: "):]


def fake_run(path) -> None:
    """The files `detkit train` writes (a checkpoint's index and data, events), without training."""
    (path / "checkpoints").mkdir(parents=True)
    (path / "config.yml").write_text("train: {}\n")
    (path / "classes.json").write_text('["cat"]\n')
    (path / "checkpoints" / "ckpt-1.index").write_bytes(b"i")
    (path / "checkpoints" / "ckpt-1.data-00000-of-00001").write_bytes(b"d")
    (path / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
    (path / "train").mkdir()
    (path / "train" / "events.out.tfevents.1.host").write_bytes(b"e")


# ---------------------------------------------------------------- checkpoint delete
def test_delete_dot_in_a_project_folder_is_refused(tmp_path, run_detkit, monkeypatch):
    project = tmp_path / "project"
    fake_run(project)  # config.yml and checkpoints/ as a run has, but also the user's code
    (project / "src").mkdir()
    (project / "src" / "model.py").write_text("# mine\n")
    monkeypatch.chdir(project)
    code, _, err = run_detkit("checkpoint", "delete", ".", "--yes")
    assert code == 1
    assert error_line(err) == (".: not deleting the current directory (or one holding it); name the run "
                               "directory from outside it")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_detkit("checkpoint", "delete", "project", "--yes")
    assert code == 1
    assert error_line(err) == ("project: not deleting: it holds src, which detkit does not write in a run "
                               "directory; remove those yourself first if the run should go")
    assert (project / "src" / "model.py").read_text() == "# mine\n"


def test_delete_a_real_run_directory(tmp_path, run_detkit):
    run = tmp_path / "jobs" / "r"
    fake_run(run)
    (run / "metrics.json").write_text("{}")
    (run / "eval_test").mkdir()
    code, _, err = run_detkit("checkpoint", "delete", run, "--yes")
    assert code == 0, err
    assert not run.exists() and (tmp_path / "jobs").is_dir()


def test_delete_a_folder_without_config_is_refused(tmp_path, run_detkit):
    folder = tmp_path / "stuff"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "holiday.jpg").write_bytes(b"x")
    code, _, err = run_detkit("checkpoint", "delete", folder, "--yes")
    assert code == 1 and "not deleting: no config.yml" in error_line(err)
    assert (folder / "holiday.jpg").exists()


# ---------------------------------------------------------------- pack, unpack, export
def test_delete_refuses_a_train_folder_of_photos(tmp_path, run_detkit):
    folder = tmp_path / "photos"
    fake_run(folder)
    (folder / "train" / "cat.jpg").write_bytes(b"x")  # the user's training photos, beside a config.yml
    (folder / "eval_test").mkdir()
    (folder / "eval_test" / "notes.txt").write_text("mine")
    code, _, err = run_detkit("checkpoint", "delete", folder, "--yes")
    assert code == 1
    assert error_line(err) == (f"{folder}: not deleting: it holds eval_test/notes.txt, train/cat.jpg, which detkit "
                               "does not write in a run directory; remove those yourself first if the run should go")
    assert (folder / "train" / "cat.jpg").exists() and (folder / "eval_test" / "notes.txt").exists()


@pytest.fixture
def live_pid():
    """The pid of a process that stays alive during the test."""
    process = subprocess.Popen(["sleep", "60"])
    yield process.pid
    process.kill()
    process.wait()


def lock_run(run, pid: int) -> None:
    (run / "train.lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "now"}))


def test_delete_and_unpack_refuse_a_run_being_trained(tiny_run, tmp_path, run_detkit, live_pid):
    run = tmp_path / "jobs" / "r"
    fake_run(run)
    lock_run(run, live_pid)
    refused = (f"{run}: not deleting: `detkit train` pid {live_pid} on host {socket.gethostname()} holds it "
               "(train.lock); wait for it or stop it first")
    code, _, err = run_detkit("checkpoint", "delete", run, "--yes")
    assert code == 1 and error_line(err) == refused
    code, _, err = run_detkit("checkpoint", "delete", run / "checkpoints" / "ckpt-1", "--yes")
    assert code == 1 and error_line(err) == refused
    assert (run / "checkpoints" / "ckpt-1.index").is_file()

    packed = tmp_path / "run.tar"
    assert run_detkit("checkpoint", "pack", tiny_run["run_dir"], "--output", packed)[0] == 0
    code, _, err = run_detkit("checkpoint", "unpack", packed, "--output", run, "--overwrite")
    assert code == 1 and error_line(err) == refused.replace("not deleting", "not replacing")
    assert (run / "checkpoints" / "ckpt-1.index").is_file()

    lock_run(run, 2 ** 22 + 1)  # a holder that died: the run may go
    assert run_detkit("checkpoint", "delete", run, "--yes")[0] == 0
    assert not run.exists()


def test_pack_refuses_an_existing_file_and_replaces_only_a_pack(tiny_run, tmp_path, run_detkit):
    notes = tmp_path / "notes.tar"
    notes.write_text("my notes")
    code, _, err = run_detkit("checkpoint", "pack", tiny_run["run_dir"], "--output", notes)
    assert code == 1
    assert error_line(err) == f"{notes}: already exists; pass --overwrite to replace it, or choose another --output"
    code, _, err = run_detkit("checkpoint", "pack", tiny_run["run_dir"], "--output", notes, "--overwrite")
    assert code == 1 and "not replacing it: it is not a `detkit checkpoint pack` file" in error_line(err)
    assert notes.read_text() == "my notes"
    packed = tmp_path / "run.tar"
    assert run_detkit("checkpoint", "pack", tiny_run["run_dir"], "--output", packed)[0] == 0
    code, _, err = run_detkit("checkpoint", "pack", tiny_run["run_dir"], "--output", packed, "--checkpoint", "3",
                              "--overwrite")
    assert code == 0, err
    from detkit.runs import read_manifest

    assert read_manifest(str(packed))["step"] == 3


def test_unpack_overwrite_replaces_only_a_run_directory(tiny_run, tmp_path, run_detkit):
    packed = tmp_path / "run.tar"
    assert run_detkit("checkpoint", "pack", tiny_run["run_dir"], "--output", packed)[0] == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    code, _, err = run_detkit("checkpoint", "unpack", packed, "--output", mine, "--overwrite")
    assert code == 1
    assert error_line(err) == (f"{mine}: not replacing: no config.yml, so not a run directory written by "
                               "`detkit train`")
    assert (mine / "thesis.tex").read_text() == "years of work"
    out = tmp_path / "unpacked"
    assert run_detkit("checkpoint", "unpack", packed, "--output", out)[0] == 0
    code, _, err = run_detkit("checkpoint", "unpack", packed, "--output", out, "--overwrite")  # an earlier unpack
    assert code == 0, err
    assert (out / "checkpoints" / "ckpt-6.index").is_file()


def test_export_overwrite_replaces_only_an_earlier_export(tiny_run, tmp_path, run_detkit):
    mine = tmp_path / "site"
    mine.mkdir()
    (mine / "index.html").write_text("<p>mine</p>")
    code, _, err = run_detkit("checkpoint", "export", tiny_run["run_dir"], "--output", mine, "--overwrite")
    assert code == 1
    assert error_line(err) == (f"{mine}: not replacing it: it holds index.html, so not an earlier "
                               "`detkit checkpoint export`; choose another --output")
    assert (mine / "index.html").read_text() == "<p>mine</p>"


# ---------------------------------------------------------------- predict -d and -f
@pytest.fixture
def photos(raccoon_dir, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for n in (1, 2):
        shutil.copy(os.path.join(raccoon_dir, "images", f"raccoon-{n}.jpg"), folder / f"raccoon-{n}.jpg")
    return folder


def test_drawn_copies_never_replace_inputs_or_files_predict_did_not_draw(tiny_run, photos, tmp_path, run_detkit):
    originals = {p.name: p.read_bytes() for p in photos.iterdir()}
    code, _, err = run_detkit("predict", photos, "--checkpoint", tiny_run["run_dir"], "-d", photos)
    assert code == 0, err
    assert {n: (photos / n).read_bytes() for n in originals} == originals  # the photos are untouched
    assert sorted(p.name for p in photos.iterdir()) == [".detkit-drawn", "raccoon-1-1.jpg", "raccoon-1.jpg",
                                                        "raccoon-2-1.jpg", "raccoon-2.jpg"]
    assert "2 drawn copies got a new name (e.g. raccoon-1-1.jpg)" in err

    drawn = tmp_path / "drawn"
    drawn.mkdir()
    (drawn / "raccoon-1.jpg").write_bytes(b"the user's own file")
    for _ in range(2):  # the same command twice: the second replaces its own copies, adds nothing
        code, _, err = run_detkit("predict", photos / "raccoon-1.jpg", photos / "raccoon-2.jpg",
                                  "--checkpoint", tiny_run["run_dir"], "-d", drawn)
        assert code == 0, err
        assert sorted(p.name for p in drawn.iterdir()) == [".detkit-drawn", "raccoon-1-1.jpg", "raccoon-1.jpg",
                                                           "raccoon-2.jpg"]
    assert (drawn / "raccoon-1.jpg").read_bytes() == b"the user's own file"


def test_output_file_is_replaced_only_with_overwrite_and_only_if_predict_wrote_it(tiny_run, photos, tmp_path,
                                                                                  run_detkit):
    image = photos / "raccoon-1.jpg"
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    code, _, err = run_detkit("predict", image, "--checkpoint", tiny_run["run_dir"], "-f", notes)
    assert code == 1
    assert error_line(err) == f"{notes}: already exists; pass --overwrite to replace it, or choose another -f"
    code, _, err = run_detkit("predict", image, "--checkpoint", tiny_run["run_dir"], "-f", notes, "--overwrite")
    assert code == 1 and "not JSON lines written by `detkit predict`" in error_line(err)
    code, _, err = run_detkit("predict", image, "--checkpoint", tiny_run["run_dir"], "-f", image, "--overwrite")
    assert code == 1 and image.read_bytes()[:2] == b"\xff\xd8"  # never a photo, even with --overwrite
    assert notes.read_text() == "my notes\n"
    out = tmp_path / "out.jsonl"
    assert run_detkit("predict", image, "--checkpoint", tiny_run["run_dir"], "-f", out)[0] == 0
    code, _, err = run_detkit("predict", photos, "--checkpoint", tiny_run["run_dir"], "-f", out, "--overwrite")
    assert code == 0, err
    assert len([json.loads(line) for line in out.read_text().splitlines()]) == 2

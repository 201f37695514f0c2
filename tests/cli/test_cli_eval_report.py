"""`detkit eval --report DIR` on the tiny run, as a user runs it: the files, report.json against `--json`, an
independent count and pycocotools, TensorBoard's PR curves and confusion image, replacing a report, and the
page itself in headless Chromium (every image loads, the tables show report.json's numbers).

The browser part needs Debian's Chromium (`apt-get install -y --no-install-recommends chromium`) and the
Playwright package (in the `test` extra), as the web server's page test does; it is skipped, with that
reason, where Chromium is not installed.
"""
from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "eval"))
from test_eval_confusion import independent_count  # noqa: E402
from test_eval_voc_map import pycocotools_ap50  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def reported(tiny_run, tmp_path_factory):
    """A copy of the tiny run, and `detkit eval --json --report` run on it once: (run, out dir, --json line, stderr)."""
    from click.testing import CliRunner

    from detkit.cli.main import cli

    root = tmp_path_factory.mktemp("report")
    run = str(root / "tiny")
    shutil.copytree(tiny_run["run_dir"], run)
    out = str(root / "out")
    result = CliRunner().invoke(cli, ["eval", "--checkpoint", run, "--json", "--no-progress", "--report", out])
    assert result.exit_code == 0, (result.output, result.exception)
    (line,) = [json.loads(x) for x in result.stdout.splitlines() if x.strip()]
    return run, out, line, result.stderr


def test_report_files_and_json_agree_with_the_json_line(reported):
    run, out, line, stderr = reported
    assert f"{out}/report.html" in stderr
    report = json.load(open(os.path.join(out, "report.json")))
    for name in report["figures"].values():
        assert os.path.getsize(os.path.join(out, name)) > 1000, name
    assert report["worst_images"] and all(os.path.isfile(os.path.join(out, w["file"])) for w in report["worst_images"])
    # The --json line gains the threshold, per-class TP/FP/FN and the confusion matrix; report.json has them too.
    assert set(line["per_class"]["raccoon"]) >= {"ap50", "tp", "fp", "fn"}
    assert line["confusion"]["labels"] == ["raccoon", "background"]
    for key in ("threshold", "confusion", "map50", "coco_ap", "num_detections"):
        assert report[key] == line[key], key
    for key, value in line["per_class"]["raccoon"].items():
        assert report["per_class"]["raccoon"][key] == value, key
    assert report["per_class"]["raccoon"]["ap50"] == line["per_class"]["raccoon"]["ap"]  # IoU 0.5 both


def test_counts_equal_an_independent_count_and_ap_equals_pycocotools(tiny_run, reported):
    from detkit import Detector
    from detkit.eval.runner import collect

    run, out, line, _ = reported
    report = json.load(open(os.path.join(out, "report.json")))
    detector = Detector.from_checkpoint(run)
    gts, dets = collect(detector.model, detector.config, tiny_run["dataset_dir"], "test", show_progress=False)
    matrix = independent_count(gts, dets, 1, report["threshold"])
    assert report["confusion"]["matrix"] == matrix.tolist()
    assert matrix[0].sum() == 44  # every gt once in its row
    assert matrix[:, 0].sum() == sum(int((d.scores >= report["threshold"]).sum()) for d in dets)
    tp, fp, fn = matrix[0, 0], matrix[1, 0], matrix[0, 1]
    assert (report["per_class"]["raccoon"]["tp"], report["per_class"]["raccoon"]["fp"],
            report["per_class"]["raccoon"]["fn"]) == (tp, fp, fn)
    ap = report["per_class"]["raccoon"]["ap50"]
    assert ap == pytest.approx(pycocotools_ap50(gts, dets)[1], abs=0.02)
    costs = [report["errors"]["per_class"]["raccoon"][t]["ap_cost"] for t in report["errors"]["types"]]
    assert min(costs) >= 0 and sum(costs) <= 1 - ap
    shares = [report["errors"]["per_class"]["raccoon"][t]["ap_share"] for t in report["errors"]["types"]]
    assert min(shares) >= 0 and sum(shares) == pytest.approx(1 - ap, abs=1e-9)
    assert sum(b["num_gt"] for b in report["sizes"]["bins"]) == 44


def test_tensorboard_gets_pr_curves_and_the_confusion_image(reported):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _, _, _ = reported
    acc = EventAccumulator(os.path.join(run, "eval_test"), size_guidance={"tensors": 0, "images": 0})
    acc.Reload()
    assert "pr_curve/raccoon/pr_curves" in acc.Tags()["tensors"]
    (event,) = acc.Tensors("pr_curve/raccoon/pr_curves")
    assert event.step == 6 and list(event.tensor_proto.tensor_shape.dim[0:1])[0].size == 6  # tp fp tn fn p r
    assert "confusion_matrix" in acc.Tags()["tensors"]


def test_a_report_replaces_its_own_and_nothing_else(reported, run_detkit, tmp_path):
    run, out, _, _ = reported
    code, stdout, _ = run_detkit("eval", "--checkpoint", run, "--no-progress", "--no-record", "--min-prob", "0.2",
                                 "--report", out)
    assert code == 0 and "TP" in stdout
    assert json.load(open(os.path.join(out, "report.json")))["threshold"] == 0.2
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    code, _, stderr = run_detkit("eval", "--checkpoint", run, "--no-record", "--report", other)
    assert code != 0 and stderr.startswith("detkit: error: --report") and "Traceback" not in stderr
    assert (other / "notes.txt").read_text() == "keep me" and len(os.listdir(other)) == 1


def test_several_splits_get_a_report_each(tiny_run, reported, run_detkit, tmp_path):
    run, _, _, _ = reported
    data = tiny_run["dataset_dir"]
    code, _, stderr = run_detkit("eval", "--checkpoint", run, "--no-progress", "--no-record", "--report",
                                 tmp_path / "both", "--dataset-dir", data, "--split", "test", "--dataset-dir", data,
                                 "--split", "test")
    assert code == 0, stderr
    assert sorted(os.listdir(tmp_path / "both")) == ["test", "test_2"]
    first, second = (json.load(open(tmp_path / "both" / label / "report.json")) for label in ("test", "test_2"))
    assert first["confusion"] == second["confusion"]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed; install it with `apt-get install -y "
                    "--no-install-recommends chromium` (Debian/Ubuntu) to run the browser test")
def test_page_in_chromium_loads_every_image_and_shows_the_numbers(reported):
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed: pip install -e '.[test]'")
    _, out, _, _ = reported
    report = json.load(open(os.path.join(out, "report.json")))
    url = "file://" + os.path.join(out, "report.html")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            requests, problems = [], []
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(url)
            page.wait_for_load_state("load")
            images = page.eval_on_selector_all("img", "els => els.map(e => [e.getAttribute('src'), e.complete, "
                                                      "e.naturalWidth])")
            srcs = {src for src, _, _ in images}
            assert set(report["figures"].values()) | {w["file"] for w in report["worst_images"]} <= srcs
            assert all(complete and width > 0 for _, complete, width in images), images

            def cells(table_id):
                return page.eval_on_selector_all(f"#{table_id} tbody tr",
                                                 "rows => rows.map(r => [...r.cells].map(c => c.innerText))")

            assert float(page.inner_text("#threshold")) == pytest.approx(report["threshold"], abs=1e-4)
            (row,) = cells("per-class")
            values = report["per_class"]["raccoon"]
            assert row[0] == "raccoon" and int(row[1]) == values["num_gt"]
            assert float(row[2]) == pytest.approx(values["ap50"], abs=5e-4)
            assert [int(v) for v in row[6:9]] == [values["tp"], values["fp"], values["fn"]]
            assert [[int(v) for v in r[1:]] for r in cells("confusion")] == report["confusion"]["matrix"]
            costs = cells("error-types")
            assert [float(v) for v in costs[0][1:]] == pytest.approx(
                [report["errors"]["overall"][t]["ap_cost"] for t in report["errors"]["types"]], abs=5e-4)
            shares = cells("error-shares")
            assert [float(v) for v in shares[1][1:]] == pytest.approx(
                [report["errors"]["per_class"]["raccoon"][t]["ap_share"] for t in report["errors"]["types"]], abs=5e-4)
            assert [int(r[3]) for r in cells("sizes")] == [b["num_gt"] for b in report["sizes"]["bins"]]
            first = report["worst_images"][0]
            assert len(cells(f"errors-{first['rank']}")) == first["num_errors"]
            page.click(f"a[href='#photo-{first['rank']}']")
            assert page.evaluate("location.hash") == f"#photo-{first['rank']}"
            assert all(u.startswith("file://") for u in requests), requests  # nothing from the internet
            assert not problems, problems
        finally:
            browser.close()


def test_in_training_eval_writes_pr_curves_and_the_confusion_image(tiny_run, run_detkit, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code, _, stderr = run_detkit("train", "-c", tiny_run["config"], "-o", f"train.job_dir={tmp_path}",
                                 "-o", "train.run_name=evals", "-o", "train.num_steps=2",
                                 "-o", "train.eval_split=test", "-o", "train.eval_every_steps=2")
    assert code == 0, stderr
    acc = EventAccumulator(str(tmp_path / "evals" / "train"), size_guidance={"tensors": 0})
    acc.Reload()
    tags = acc.Tags()["tensors"]
    assert "eval/pr_curve/raccoon/pr_curves" in tags and "eval/confusion_matrix" in tags
    assert [e.step for e in acc.Tensors("eval/confusion_matrix")] == [2]

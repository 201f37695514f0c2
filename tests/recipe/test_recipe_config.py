"""The recipe under the user's config: -c/-o win, recorded in the run, shown by inspect; zero-config training."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from detkit.recipe import format_recipe, split_recipe, training_config

# 6 images of 160x120 with one or two 40x30 boxes: classes a (every image) and b (two images).
IMAGES = {f"im{i}.png": [("a", (10, 10, 50, 40))] + ([("b", (80, 60, 120, 90))] if i < 2 else []) for i in range(6)}


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> str:
    from click.testing import CliRunner

    from detkit.cli.main import cli

    root = tmp_path_factory.mktemp("recipe")
    (root / "images").mkdir()
    rows = ["filename,width,height,class,xmin,ymin,xmax,ymax"]
    rng = np.random.default_rng(0)
    for name, objects in IMAGES.items():
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(root / "images" / name)
        rows += [f"{name},160,120,{c},{b[0]},{b[1]},{b[2]},{b[3]}" for c, b in objects]
    (root / "train.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = root / "dataset"
    result = CliRunner().invoke(cli, ["dataset", "transform", "--type", "csv", "--annotations", str(root / "train.csv"),
                                      "--images-dir", str(root / "images"), "--output-dir", str(out),
                                      "--split", "train"], standalone_mode=False)
    assert result.exception is None, (result.exception, result.output)
    return str(out)


def test_zero_config_is_the_recipe(dataset_dir):
    tc = training_config(dataset_dir=dataset_dir, minutes=2)
    cfg = tc.config
    # 40x30 boxes in 160x120 images: 30/160 of the longer side, 24 px well below 320: the smallest input.
    assert (cfg.dataset.image.min_size, cfg.dataset.image.max_size) == (320, 320)
    assert cfg.model.base_network.name == "small_resnet" and cfg.model.base_network.weights == "none"
    # Boxes become 80x60 (x2): sqrt = 69.3 px -> anchors 64 (floor) .. 64 (nearest octave).
    assert cfg.model.anchors.sizes == [64.0]
    assert cfg.train.max_minutes == 2 and cfg.train.learning_rate.schedule == "cosine"
    # b is in 2 of 6 images, a in 6: 3x apart, under the 4x that turns resampling on.
    assert cfg.dataset.repeat_factor_threshold == 0.0
    record = tc.record()
    assert [c["name"] for c in record["choices"]] == ["backbone", "model and input size", "anchors", "samples", "proposals",
                                                      "detections", "class balance", "schedule"]
    schedule = record["choices"][-1]
    assert schedule["yours"] == {"train.max_minutes": 2.0} and "train.max_minutes" not in schedule["applied"]
    assert (record["images"], record["boxes"]) == (6, 8)


def test_user_values_win_key_by_key(dataset_dir, tmp_path):
    config = tmp_path / "mine.yml"
    config.write_text("model:\n  anchors:\n    sizes: [8, 16]\n  rcnn:\n    target: {minibatch_size: 32}\n")
    tc = training_config([str(config)], ["dataset.image.max_size=400", "model.base_network.small_widths=[8,16,16,32]"],
                         dataset_dir=dataset_dir)
    cfg = tc.config
    assert cfg.model.anchors.sizes == [8.0, 16.0] and cfg.model.anchors.ratios == [0.5, 1.0, 2.0]
    assert cfg.model.rcnn.target.minibatch_size == 32 and cfg.model.rpn.target.minibatch_size == 256
    assert (cfg.dataset.image.min_size, cfg.dataset.image.max_size) == (320, 400)
    # A width is not a backbone choice: the from-scratch group still applies, but the user's widths win.
    assert cfg.model.base_network.name == "small_resnet" and cfg.model.base_network.small_widths == [8, 16, 16, 32]
    by_name = {c["name"]: c for c in tc.record()["choices"]}
    assert by_name["anchors"]["yours"] == {"model.anchors.sizes": [8.0, 16.0]}
    assert by_name["anchors"]["applied"] == {"model.anchors.ratios": [0.5, 1.0, 2.0]}
    text = format_recipe(tc)
    assert "yours: model.anchors.sizes=[8.0, 16.0]" in text and "why:" in text


def test_a_chosen_backbone_or_step_count_keeps_its_own_training(dataset_dir):
    tc = training_config([], ["model.base_network.name=resnet50", "train.num_steps=50"], dataset_dir=dataset_dir)
    names = [c.name for c in tc.recipe.choices]
    assert "backbone" not in names and "schedule" not in names
    assert tc.config.model.base_network.weights == "imagenet" and tc.config.train.optimizer.type == "sgd"
    assert tc.config.train.num_steps == 50 and tc.config.train.max_minutes == 0
    assert tc.config.dataset.image.max_size == 320  # the data-driven choices still apply


def test_a_chosen_backbone_without_budget_keeps_its_epochs_and_with_one_gets_the_schedule(dataset_dir):
    tc = training_config([], ["model.base_network.weights=imagenet"], dataset_dir=dataset_dir)
    assert "schedule" not in [c.name for c in tc.recipe.choices] and tc.config.train.num_epochs == 20
    tc = training_config([], ["model.base_network.weights=imagenet"], dataset_dir=dataset_dir, minutes=5)
    assert "schedule" in [c.name for c in tc.recipe.choices] and tc.config.train.max_minutes == 5


def test_recipe_off_trains_the_config_as_written(dataset_dir):
    tc = training_config([], ["train.recipe=false"], dataset_dir=dataset_dir)
    assert tc.recipe is None and tc.record() == {}
    assert tc.config.dataset.image.min_size == 600 and tc.config.model.base_network.name == "resnet50"
    assert "recipe off" in format_recipe(tc)


def test_inspect_shows_the_same_recipe(dataset_dir, run_detkit):
    code, out, err = run_detkit("dataset", "inspect", dataset_dir, "--split", "train", "--json")
    assert code == 0, err
    shown = json.loads(out)["recipe"]
    expected = training_config(dataset_dir=dataset_dir).record()
    assert shown["choices"] == expected["choices"]
    code, out, _ = run_detkit("dataset", "inspect", dataset_dir, "--split", "train")
    assert "recipe for" in out and "anchors: model.anchors.sizes=[64.0]" in out


@pytest.mark.slow
def test_zero_config_training_from_the_command_line(dataset_dir, tmp_path, run_detkit):
    from detkit.config.tiny import tiny_model_overrides

    # No -c: the recipe is the config. The tiny model's sizes keep the few steps quick; they are the user's and win
    # (its backbone name and weights are left out: choosing those would leave the training to the user).
    tiny = [o for o in tiny_model_overrides() if not o.startswith(("model.base_network.name", "model.base_network.weights"))]
    code, out, err = run_detkit(
        "train", "--dataset-dir", dataset_dir, "--minutes", "0.05", "-o", f"train.job_dir={tmp_path / 'jobs'}",
        "-o", "train.run_name=zero", *[a for o in tiny for a in ("-o", o)])
    assert code == 0, err
    run_dir = tmp_path / "jobs" / "zero"
    assert out.strip() == str(run_dir)
    assert "recipe for" in err and "why:" in err
    assert err.index("recipe for") < err.index("finished at step")
    saved = yaml.safe_load((run_dir / "config.yml").read_text())
    recipe = json.loads((run_dir / "recipe.json").read_text())
    assert (saved["dataset"]["image"]["min_size"], saved["dataset"]["image"]["max_size"]) == (320, 320)
    assert saved["model"]["base_network"]["small_widths"] == [8, 16, 16, 32]
    assert saved["model"]["base_network"]["name"] == "small_resnet" and saved["train"]["optimizer"]["type"] == "adam"
    assert saved["train"]["max_minutes"] == 0.05
    # Every value the recipe applied is the one the run's effective config holds.
    for choice in recipe["choices"]:
        for key, value in choice["applied"].items():
            node = saved
            for part in key.split("."):
                node = node[part]
            assert node == value, key
    assert list((run_dir / "checkpoints").glob("ckpt-*.index"))


def test_resuming_keeps_the_runs_values_for_unset_keys(dataset_dir, tmp_path):
    run_dir = tmp_path / "jobs" / "r"
    (run_dir / "checkpoints").mkdir(parents=True)
    for suffix in (".index", ".data-00000-of-00001"):
        (run_dir / "checkpoints" / f"ckpt-5{suffix}").write_bytes(b"x")
    saved = training_config(dataset_dir=dataset_dir).config
    saved.model.anchors.sizes = [48.0]  # as if the data had changed since the run started
    from detkit.config import dump_yaml

    (run_dir / "config.yml").write_text(dump_yaml(saved))
    tc = training_config([], ["train.job_dir=" + str(tmp_path / "jobs"), "train.run_name=r", "train.max_minutes=3"],
                         dataset_dir=dataset_dir)
    assert tc.resuming == str(run_dir) and tc.record() == {}
    assert tc.config.model.anchors.sizes == [48.0] and tc.config.train.max_minutes == 3
    assert "resuming" in format_recipe(tc)


def test_fpn_architecture_gets_anchors_per_level_of_its_body(dataset_dir):
    from detkit.models.build import build_detector

    tc = training_config([], ["model.architecture=fpn"], dataset_dir=dataset_dir)
    cfg = tc.config
    # The recipe's cheapest pyramid that resolves the boxes: small_resnet's stride-8 and 16 maps (and the pooled
    # level), 64 channels. Boxes of 80x60 px after the x2 resize (sqrt 69.3): 64, then one octave per level.
    assert cfg.model.base_network.name == "small_resnet"
    assert cfg.model.fpn.body_strides == [8, 16] and cfg.model.fpn.channels == 64
    assert cfg.model.fpn.anchor_sizes == [[64.0], [128.0], [256.0]]
    # At most 2 boxes per image: 2000 / 1000 proposals before NMS in total, 667 / 333 -> 700 / 400 per level.
    assert (cfg.model.rpn.train_proposals.pre_nms_top_n, cfg.model.rpn.test_proposals.pre_nms_top_n) == (700, 400)
    assert len(build_detector(cfg, 2).rpn_settings.anchors.sizes) == 3  # one per level of the body, and the pooled
    # The user's own levels win: all three of small_resnet's maps, and the pooled level.
    tc = training_config([], ["model.architecture=fpn", "model.fpn.body_strides=[4,8,16]"], dataset_dir=dataset_dir)
    assert tc.config.model.fpn.anchor_sizes == [[64.0], [128.0], [256.0], [512.0]]
    tc = training_config([], ["model.architecture=fpn", "model.base_network.name=resnet50_tv",
                              "model.base_network.weights=none"], dataset_dir=dataset_dir)
    assert tc.config.model.fpn.anchor_sizes == [[64.0], [128.0], [256.0], [512.0], [1024.0]]


def source_run(tmp_path, dataset_dir):
    """A run as `detkit train` leaves it (config.yml and a checkpoint) with shapes the recipe would not choose."""
    from detkit.config import dump_yaml

    run_dir = tmp_path / "source"
    (run_dir / "checkpoints").mkdir(parents=True)
    for suffix in (".index", ".data-00000-of-00001"):
        (run_dir / "checkpoints" / f"ckpt-7{suffix}").write_bytes(b"x")
    saved = training_config(dataset_dir=dataset_dir).config
    saved.model.anchors.sizes = [24.0, 48.0]
    saved.model.base_network.small_widths = [8, 16, 16, 32]
    saved.model.rcnn.target.minibatch_size = 32
    saved.dataset.image.min_size = saved.dataset.image.max_size = 256
    (run_dir / "config.yml").write_text(dump_yaml(saved))
    return run_dir


def test_init_from_keeps_the_source_runs_shapes(dataset_dir, tmp_path):
    src = source_run(tmp_path, dataset_dir)
    tc = training_config([], [f"train.init_from={src}", "model.rcnn.fc_sizes=[128]"], dataset_dir=dataset_dir)
    cfg = tc.config
    assert (cfg.dataset.image.min_size, cfg.dataset.image.max_size) == (256, 256)
    assert cfg.model.anchors.sizes == [24.0, 48.0] and cfg.model.base_network.small_widths == [8, 16, 16, 32]
    assert cfg.model.base_network.name == "small_resnet" and cfg.model.rcnn.fc_sizes == [128]
    # The recipe still chooses what keeps the weights' shapes: 64 sampled RoIs (the run had 32); no schedule without
    # a budget, and the fine-tuning group (SGD at 0.005, cosine), not the from-scratch one (Adam).
    assert cfg.model.rcnn.target.minibatch_size == 64 and cfg.train.optimizer.type == "sgd"
    assert cfg.train.learning_rate.base == 0.005
    assert [c.name for c in tc.recipe.choices] == ["fine-tuning", "samples", "proposals", "detections",
                                                   "class balance"]
    assert tc.record()["init_from"] == str(src)
    assert "train.init_from" in format_recipe(tc) and "shapes its weights need" in format_recipe(tc)
    tc = training_config([], [f"train.init_from={src}"], dataset_dir=dataset_dir, minutes=1)
    assert tc.recipe.choices[-1].name == "schedule" and tc.config.train.max_minutes == 1


def test_init_from_or_resume_with_an_unreadable_run_is_an_error(dataset_dir, tmp_path):
    from detkit.errors import CheckpointError

    with pytest.raises(CheckpointError, match="not a run directory"):
        training_config([], [f"train.init_from={tmp_path / 'nothing'}"], dataset_dir=dataset_dir)
    src = source_run(tmp_path, dataset_dir)
    (src / "config.yml").write_text("model: [\n")
    with pytest.raises(CheckpointError, match="config.yml line"):
        training_config([], [f"train.job_dir={tmp_path}", "train.run_name=source"], dataset_dir=dataset_dir)


@pytest.mark.slow
def test_fpn_training_from_the_command_line(dataset_dir, tmp_path, run_detkit):
    from detkit.config.tiny import tiny_model_overrides

    tiny = [o for o in tiny_model_overrides() if not o.startswith(("model.base_network.name", "model.base_network.weights"))]
    code, _, err = run_detkit(
        "train", "--dataset-dir", dataset_dir, "--minutes", "0.05", "-o", f"train.job_dir={tmp_path / 'jobs'}",
        "-o", "train.run_name=fpn", "-o", "model.architecture=fpn", "-o", "model.fpn.channels=16",
        *[a for o in tiny for a in ("-o", o)])
    assert code == 0, err
    saved = yaml.safe_load((tmp_path / "jobs" / "fpn" / "config.yml").read_text())
    assert saved["model"]["fpn"]["anchor_sizes"] == [[64.0], [128.0], [256.0]]
    assert saved["model"]["fpn"]["body_strides"] == [8, 16] and saved["model"]["fpn"]["channels"] == 16


def test_a_downloaded_detector_is_fine_tuned_unless_a_model_is_chosen_or_from_scratch(dataset_dir, zoo_home):
    """`detkit train --dataset-dir` with a COCO detector in the cache starts from it: its model and input size, the
    fine-tuning recipe, new class heads; --from-scratch, or any key that chooses a model, trains from nothing."""
    tc = training_config(dataset_dir=dataset_dir, minutes=2)
    cfg = tc.config
    assert cfg.train.init_from == zoo_home
    names = [c["name"] for c in tc.record()["choices"]]
    assert names[0] == "fine-tuning" and "backbone" not in names and "model and input size" not in names
    # The downloaded (here: the tests' tiny) model's own shapes, and the fine-tuning recipe's training.
    assert (cfg.dataset.image.min_size, cfg.dataset.image.max_size) == (160, 224)
    assert cfg.model.base_network.small_widths == [8, 16, 16, 32]
    assert (cfg.train.optimizer.type, cfg.train.learning_rate.base, cfg.train.learning_rate.schedule) == (
        "sgd", 0.005, "cosine")
    assert cfg.train.max_minutes == 2 and cfg.train.num_steps > 0
    assert "fine-tuning the downloaded COCO detector fast" in tc.describe()
    assert "--from-scratch" in tc.describe()
    for keys in ([], ["model.architecture=single_level"], ["model.anchors.sizes=[32,64]"],
                 ["dataset.image.max_size=400"]):
        scratch = training_config([], keys, dataset_dir=dataset_dir, minutes=2, from_scratch=not keys)
        assert scratch.config.train.init_from == "" and scratch.record()["choices"][0]["name"] == "backbone", keys
    # `detkit dataset inspect` shows the recipe training would use: the fine-tuning one.
    assert split_recipe(dataset_dir, "train").record()["choices"][0]["name"] == "fine-tuning"


@pytest.mark.slow
def test_zero_config_training_fine_tunes_the_downloaded_detector(dataset_dir, zoo_home, tmp_path, run_detkit):
    code, out, err = run_detkit("train", "--dataset-dir", dataset_dir, "--minutes", "0.05",
                                "-o", f"train.job_dir={tmp_path / 'jobs'}", "-o", "train.run_name=tuned")
    assert code == 0, err
    assert "fine-tuning the downloaded COCO detector fast" in err
    assert f"initialised from {zoo_home}" in err and "(class heads re-initialised)" in err
    saved = yaml.safe_load((tmp_path / "jobs" / "tuned" / "config.yml").read_text())
    assert saved["train"]["init_from"] == zoo_home

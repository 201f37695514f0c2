import dataclasses
import subprocess
import sys

import pytest
import yaml

from detkit.config import Config, dump_yaml, load_config, to_dict
from detkit.config.loader import _all_keys, default_dict
from detkit.errors import ConfigError


def test_defaults_file_covers_schema_exactly():
    # The documented base YAML and the dataclasses must not drift apart.
    def keys(d, prefix=""):
        out = []
        for k, v in d.items():
            out.append(prefix + k)
            if isinstance(v, dict):
                out += keys(v, prefix + k + ".")
        return out

    assert sorted(keys(default_dict())) == sorted(_all_keys(Config))


def test_defaults_yaml_values_match_dataclass_defaults():
    assert to_dict(load_config()) == to_dict(Config())


def test_files_then_overrides_later_wins(tmp_path):
    a = tmp_path / "a.yml"
    b = tmp_path / "b.yml"
    a.write_text("train: {batch_size: 2, num_steps: 10}\nmodel: {anchors: {sizes: [32, 64]}}\n")
    b.write_text("train: {batch_size: 3}\n")
    cfg = load_config([str(a), str(b)], ["train.num_steps=7", "model.rcnn.enabled=false"])
    assert cfg.train.batch_size == 3
    assert cfg.train.num_steps == 7
    assert cfg.model.anchors.sizes == [32.0, 64.0]
    assert cfg.model.rcnn.enabled is False
    assert cfg.model.rpn.channels == 512  # untouched default


@pytest.mark.parametrize("override, message", [
    ("train.num_step=3", "unknown config key train.num_step — did you mean train.num_steps?"),
    ("train.batch_size=abc", "config key train.batch_size: expected int, got 'abc'"),
    ("model.base_network.name=resnet5", "did you mean resnet50?"),
    ("dataset.image.min_size=2000", "dataset.image.min_size: must be <= dataset.image.max_size"),
    ("train.learning_rate.base=-0.1", "train.learning_rate.base: must be > 0"),
    ("model.anchors.ratios=[0.5, 0]", "model.anchors.ratios[1]: must be > 0"),
    ("model.rpn.target.foreground_iou=0.2", "model.rpn.target"),
    ("trian.batch_size=2", "did you mean train"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_invalid_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("train:\n  batch_size: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yml line \d+"):
        load_config([str(bad)])
    with pytest.raises(ConfigError, match="not found"):
        load_config([str(tmp_path / "missing.yml")])


def test_dump_round_trips():
    cfg = load_config(overrides=["train.batch_size=5"])
    again = load_config(overrides=[])
    data = yaml.safe_load(dump_yaml(cfg))
    assert data["train"]["batch_size"] == 5
    assert dataclasses.asdict(again)["train"]["batch_size"] == 1


def _run(*args):
    return subprocess.run([sys.executable, "-m", "detkit", *args], capture_output=True, text=True, timeout=120)


def test_cli_config_show_and_error_exit_code():
    ok = _run("config", "show", "-o", "train.batch_size=4")
    assert ok.returncode == 0
    assert yaml.safe_load(ok.stdout)["train"]["batch_size"] == 4
    bad = _run("config", "show", "-o", "train.num_step=3")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "detkit: error: unknown config key train.num_step — did you mean train.num_steps?"
    assert "Traceback" not in bad.stderr


def test_help_does_not_import_tensorflow():
    code = ("import sys; from detkit.cli.main import cli\n"
            "try:\n    cli.main(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "assert 'tensorflow' not in sys.modules, 'help imported tensorflow'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_docs_config_reference_is_generated_from_the_schema():
    import os

    from detkit.config.reference import reference_markdown

    path = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "config.md")
    with open(path, encoding="utf-8") as fh:
        assert fh.read() == reference_markdown(), "docs/config.md is stale: run `detkit config reference > docs/config.md`"
    for key in ("model.rpn.target.foreground_iou", "train.learning_rate.schedule", "predict.min_prob"):
        assert f"`{key}`" in reference_markdown()


def test_retired_key_with_its_old_value_is_dropped_any_other_value_refused():
    from detkit.config import from_dict

    # A run directory written before train.jit_compile was retired still loads.
    cfg = from_dict({"train": {"jit_compile": False, "batch_size": 2}})
    assert cfg.train.batch_size == 2 and not hasattr(cfg.train, "jit_compile")
    with pytest.raises(ConfigError, match=r"^config key train\.jit_compile: no longer supported: XLA cannot"):
        from_dict({"train": {"jit_compile": True}})


def test_eval_batch_size_and_tpu_are_not_offered():
    from detkit.config import from_dict

    # Run directories written while these keys existed still load with their default values.
    cfg = from_dict({"eval": {"batch_size": 1, "split": "val"}, "train": {"tpu_address": ""}})
    assert cfg.eval.split == "val" and not hasattr(cfg.eval, "batch_size") and not hasattr(cfg.train, "tpu_address")
    with pytest.raises(ConfigError, match=r"^config key eval\.batch_size: no longer supported: evaluation runs one"):
        from_dict({"eval": {"batch_size": 4}})
    with pytest.raises(ConfigError, match=r"^config key train\.strategy: tpu is not offered: TPUs run only "
                                          r"XLA-compiled programs and XLA cannot compile the training step"):
        from_dict({"train": {"strategy": "tpu"}})
    with pytest.raises(ConfigError, match=r"^config key train\.tpu_address: no longer supported"):
        from_dict({"train": {"tpu_address": "grpc://10.0.0.2:8470"}})

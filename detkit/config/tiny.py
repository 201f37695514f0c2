"""The tiny detector of the tests and benchmarks: a small_resnet Faster R-CNN that trains in seconds on a CPU.

    from detkit.config.tiny import tiny_config_yaml
    open("tiny.yml", "w").write(tiny_config_yaml(dataset_dir, job_dir, train={"num_steps": 6}))

Its scores mean nothing; it exists so that tests and benchmarks exercise the real code paths quickly.
"""
from __future__ import annotations

import json
from typing import Optional

import yaml

from detkit.config.loader import _merge

TINY = {
    "dataset": {"split": "test", "image": {"min_size": 160, "max_size": 224}},
    "model": {
        "base_network": {"name": "small_resnet", "weights": "none", "freeze_batchnorm": False,
                         "small_widths": [8, 16, 16, 32], "small_blocks": [0, 1, 1, 1]},
        "rpn": {"channels": 32},
        "rcnn": {"fc_sizes": [64], "reduce_channels": 0},
    },
    "train": {
        "run_name": "tiny",
        "batch_size": 2,
        "optimizer": {"type": "adam"},
        "learning_rate": {"schedule": "constant", "base": 0.001, "warmup_steps": 0},
        "image_summary_every_steps": 0,
    },
}


def tiny_config(dataset_dir: str, job_dir: str, dataset: Optional[dict] = None, model: Optional[dict] = None,
                train: Optional[dict] = None, **sections: dict) -> dict:
    """The tiny config as a mapping for `dataset_dir` and `job_dir`, with each given section merged over it."""
    data = _merge(TINY, {"dataset": {"dir": str(dataset_dir)}, "train": {"job_dir": str(job_dir)}})
    for name, over in dict(sections, dataset=dataset or {}, model=model or {}, train=train or {}).items():
        data = _merge(data, {name: over})
    return data


def tiny_config_yaml(dataset_dir: str, job_dir: str, **sections: Optional[dict]) -> str:
    """`tiny_config` as YAML text, for a config file."""
    return yaml.safe_dump(tiny_config(dataset_dir, job_dir, **sections), sort_keys=False)


def tiny_model_overrides() -> list[str]:
    """The tiny model as `-o model.key=value` overrides (values as JSON, which YAML reads back)."""
    def flatten(prefix: str, node: dict) -> list[str]:
        out: list[str] = []
        for key, value in node.items():
            out += flatten(f"{prefix}.{key}", value) if isinstance(value, dict) else [f"{prefix}.{key}={json.dumps(value)}"]
        return out

    return flatten("model", TINY["model"])

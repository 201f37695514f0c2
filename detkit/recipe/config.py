"""The effective training config: defaults, then the recipe from the data, then the user's -c files and -o values."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from detkit.config import Config, from_dict, load_config, to_dict
from detkit.config.schema import PYRAMID_STRIDES
from detkit.errors import ConfigError, DetkitError
from detkit.config.loader import _merge, default_dict, flat_keys, merged_dict, nested
from detkit.datasets.inspect import format_report, summarize
from detkit.datasets.sources import check_training_sources
from detkit.datasets.statistics import SplitStatistics, split_statistics
from detkit.recipe.rules import FROM_SCRATCH, Recipe, RecipeOptions, make_recipe
from detkit.pretrained.zoo import model_to_finetune
from detkit.runs import latest_checkpoint, load_run_config, resolve


@dataclass
class TrainingConfig:
    """The config to train, the recipe behind it (None when train.recipe is false) and the keys the user set."""

    config: Config
    recipe: Optional[Recipe] = None
    user_keys: set[str] = field(default_factory=set)
    directory: str = ""
    split: str = ""
    images: int = 0
    boxes: int = 0
    resuming: str = ""  # the run directory whose saved config filled the unset keys, when resuming
    init_from: str = ""  # the run of train.init_from whose model.* and dataset.image.* are the base, if any

    def describe(self) -> str:
        """The recipe as text for the log ("" when there is none to show)."""
        return format_recipe(self) if self.recipe is not None or self.resuming else ""

    def record(self) -> dict[str, Any]:
        """The recipe as written to the run's recipe.json: each choice, its reason, and the values the user kept."""
        if self.recipe is None:
            return {}
        choices = []
        for c in self.recipe.choices:
            applied = {k: v for k, v in c.values.items() if k not in self.user_keys}
            yours = {k: _get(self.config, k) for k in c.values if k in self.user_keys}
            choices.append({"name": c.name, "reason": c.reason, "applied": applied, "yours": yours})
        return {"dataset": self.directory, "split": self.split, "images": self.images, "boxes": self.boxes,
                **({"init_from": self.init_from} if self.init_from else {}),
                "choices": choices, "notes": list(self.recipe.notes)}


def _get(cfg: Any, key: str) -> Any:
    """The value of a dotted key in a Config (None if absent, e.g. a key of a model detkit does not have yet)."""
    for part in key.split("."):
        cfg = getattr(cfg, part, None)
    return cfg


def recipe_options(user_keys: set[str], cfg: Config, finetune: str = "") -> RecipeOptions:
    """What the user's own keys decide: a chosen backbone (name or weights) keeps its own training; train.init_from
    gets the fine-tuning group (the user's training keys still win) and keeps the weights' shapes (no input size
    or anchors chosen); a step or epoch bound keeps its own schedule; a max_minutes is the time budget;
    model.architecture (and model.fpn.body_strides) narrow the models the recipe chooses between; a chosen fpn body
    gets anchors per level of its maps."""
    minutes = cfg.train.max_minutes if "train.max_minutes" in user_keys and cfg.train.max_minutes > 0 else None
    initialised = bool(cfg.train.init_from)
    from_scratch = not ({"model.base_network.name", "model.base_network.weights"} & user_keys) and not initialised
    # A chosen backbone with no time budget keeps its epochs (a GPU run is not bounded by the CPU default); a
    # downloaded detector detkit chose to fine-tune gets the CPU default, as training from scratch does.
    schedule = not ({"train.num_steps", "train.num_epochs"} & user_keys) and (
        from_scratch or minutes is not None or bool(finetune))
    architecture = cfg.model.architecture if "model.architecture" in user_keys else ""
    strides: tuple[int, ...] = ()
    if cfg.model.architecture == "fpn" and (not from_scratch or "model.fpn.body_strides" in user_keys):
        body = FROM_SCRATCH["model.base_network.name"] if from_scratch else cfg.model.base_network.name
        if body not in PYRAMID_STRIDES:
            raise ConfigError(f"config key model.base_network.name: {body} has no fpn body; use "
                              f"{', '.join(PYRAMID_STRIDES)} (or model.architecture: single_level)")
        strides = tuple(cfg.model.fpn.body_strides) or PYRAMID_STRIDES[body]
    return RecipeOptions(minutes=minutes, from_scratch=from_scratch, schedule=schedule, architecture=architecture,
                         body_strides=strides, shapes=not initialised, side=cfg.dataset.image.max_size,
                         finetune=finetune or cfg.train.init_from)


def recipe_for(stats: SplitStatistics, user_keys: set[str], cfg: Config, finetune: str = "") -> Recipe:
    """The recipe of a split's statistics, given the keys the user set (and the downloaded detector it starts from)."""
    return make_recipe(stats, recipe_options(user_keys, cfg, finetune))


def downloaded_start(user_keys: set[str]) -> Optional[tuple[str, str]]:
    """(name, run dir) of the downloaded COCO detector `detkit train` fine-tunes when the user set nothing of the
    model (no model.* key, input size or train.init_from: a config that shapes its own model trains it)."""
    if "train.init_from" in user_keys or any(k.startswith(("model.", "dataset.image.")) for k in user_keys):
        return None
    return model_to_finetune()


def option_overrides(dataset_dir: Optional[str] = None, minutes: Optional[float] = None) -> list[str]:
    """`detkit train --dataset-dir D --minutes N` as -o values (given before the user's own -o, which win)."""
    extra = []
    if dataset_dir is not None:
        extra.append(f"dataset.dir={json.dumps(dataset_dir)}")
    if minutes is not None:
        extra.append(f"train.max_minutes={minutes}")
    return extra


def requested_config(config_files: Sequence[str] = (), overrides: Sequence[str] = (),
                     dataset_dir: Optional[str] = None, minutes: Optional[float] = None) -> Config:
    """Defaults + -c files + --dataset-dir/--minutes + -o values, keys and types checked; ranges are checked once the
    recipe has filled in the rest (e.g. a max_size under the default min_size is fine when the recipe sets both)."""
    overrides = option_overrides(dataset_dir, minutes) + list(overrides)
    return from_dict(merged_dict(config_files, overrides), check_ranges=False)


def init_from_base(init_from: str) -> tuple[dict, str]:
    """(the model.* and dataset.image.* values of train.init_from's run, nested; its run dir): the shapes its
    weights were trained with."""
    run_dir = resolve(init_from).run_dir
    source = to_dict(load_run_config(run_dir))
    return {"model": source["model"], "dataset": {"image": source["dataset"]["image"]}}, run_dir


def training_config(config_files: Sequence[str] = (), overrides: Sequence[str] = (),
                    dataset_dir: Optional[str] = None, minutes: Optional[float] = None,
                    from_scratch: bool = False, stats: Optional[SplitStatistics] = None) -> TrainingConfig:
    """Defaults + recipe (from dataset.dir's training split) + -c files + -o values; `detkit train`'s config.

    With train.init_from, that run's model.* and dataset.image.* lie under the recipe instead of the defaults.
    When the user chooses no model and a COCO detector is downloaded (`detkit checkpoint download`), that
    detector is the train.init_from (fine-tuned), unless `from_scratch`. `stats`: the split's, if already read.
    """
    cfg = requested_config(config_files, overrides, dataset_dir, minutes)
    overrides = option_overrides(dataset_dir, minutes) + list(overrides)
    user_keys = flat_keys(merged_dict(config_files, overrides, base={}))
    if not cfg.train.recipe:
        return TrainingConfig(load_config(config_files, overrides), None, user_keys)
    saved, run_dir = _saved_run_config(cfg)
    if saved is not None:
        # Resuming: the run's own values (its recipe included) fill the keys left unset, so the same command resumes
        # even if the data changed since; keys the user sets are still compared with the run's by the trainer.
        return TrainingConfig(load_config(config_files, overrides, under=saved), None, user_keys, resuming=run_dir)
    start = None if from_scratch else downloaded_start(user_keys)
    if start is not None:
        overrides = [f"train.init_from={json.dumps(start[1])}"] + overrides
        cfg = requested_config(config_files, overrides)
    base, source_dir = init_from_base(cfg.train.init_from) if cfg.train.init_from else ({}, "")
    if base:
        cfg = from_dict(merged_dict(config_files, overrides, _merge(default_dict(), base)), check_ranges=False)
    try:
        check_training_sources(cfg.dataset)
        stats = stats if stats is not None else split_statistics(cfg.dataset.dir, cfg.dataset.split)
    except DetkitError:
        # No recipe from an unusable dataset: the trainer names the problem, in its usual order (after the
        # strategy's and the run's own checks).
        return TrainingConfig(load_config(config_files, overrides), None, user_keys)
    recipe = recipe_for(stats, user_keys, cfg, f"the downloaded COCO detector {start[0]}" if start else "")
    if start is not None:
        recipe.notes.insert(0, f"fine-tuning the downloaded COCO detector {start[0]} ({start[1]}): its weights are "
                               "the start, its class heads new; `detkit train --from-scratch` trains from nothing")
    if source_dir:
        recipe.notes.insert(0, f"train.init_from {cfg.train.init_from}: model.* and dataset.image.* are that run's "
                               f"({source_dir}/config.yml), the shapes its weights need; the recipe chooses only "
                               "what keeps them (sampling, proposals, detections, class balance, schedule)")
    final = load_config(config_files, overrides, under=_merge(base, nested(recipe.values())))
    return TrainingConfig(final, recipe, user_keys, cfg.dataset.dir, cfg.dataset.split, stats.num_images,
                          stats.num_boxes, init_from=source_dir)


def _saved_run_config(cfg: Config) -> tuple[Optional[dict], str]:
    """(the saved config of the named run when it has a checkpoint to resume from, its run dir) or (None, "")."""
    if not cfg.train.run_name:
        return None, ""
    run_dir = os.path.join(cfg.train.job_dir, cfg.train.run_name)
    if not latest_checkpoint(run_dir):
        return None, ""
    return to_dict(load_run_config(run_dir)), run_dir


def split_recipe(directory: str, split: str, minutes: Optional[float] = None,
                 stats: Optional[SplitStatistics] = None) -> TrainingConfig:
    """The recipe `detkit train --dataset-dir DIR` would train on `split` (for `detkit dataset inspect`): the same
    function, so a downloaded detector it would fine-tune shows here too."""
    return training_config([], [f"dataset.split={json.dumps(split)}"], dataset_dir=directory, minutes=minutes,
                           stats=stats)


def inspect_report(directory: str, split: str) -> tuple[dict[str, Any], str]:
    """`detkit dataset inspect`: a split's statistics with the recipe `detkit train` would derive from them (key
    "recipe"), and both as text."""
    st = split_statistics(directory, split)
    stats = summarize(st, directory, split)
    if not st.num_boxes:
        return stats, format_report(stats)
    tc = split_recipe(directory, split, stats=st)
    stats["recipe"] = tc.record()
    return stats, format_report(stats) + "\n\n" + format_recipe(tc)


def _value(value: Any) -> str:
    """A config value as the user would write it after -o."""
    return json.dumps(value)


def format_recipe(tc: TrainingConfig) -> str:
    """The recipe as text: each choice with its values and its reason; the user's values noted where they win."""
    if tc.resuming:
        return f"resuming {tc.resuming}: the keys your config leaves unset keep the run's values (see its recipe.json)"
    if tc.recipe is None:
        return "recipe off (train.recipe: false): training the config as written"
    lines = [f"recipe for {tc.directory} split {tc.split} ({tc.images} images, {tc.boxes} boxes); "
             "values you set with -c/-o win:"]
    for c in tc.record()["choices"]:
        applied = " ".join(f"{k}={_value(v)}" for k, v in c["applied"].items())
        lines.append(f"  {c['name']}: {applied or '(all yours)'}")
        lines.append(f"      why: {c['reason']}")
        if c["yours"]:
            lines.append("      yours: " + " ".join(f"{k}={_value(v)}" for k, v in c["yours"].items()))
    lines += [f"  note: {n}" for n in tc.recipe.notes]
    return "\n".join(lines)

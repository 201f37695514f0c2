"""`detkit train`: train or resume a Faster R-CNN run, in this process or as N local workers."""
from __future__ import annotations

from typing import Optional

import click

from detkit.cli.common import config_options, echo_err, is_verbose, tensorflow

# Lazy imports: `detkit --help` loads every command module, so the library behind a command (TensorFlow, for
# most) is imported when the command runs.


@click.command("train")
@config_options
@click.option("--dataset-dir", type=click.Path(), default=None, metavar="DIR",
              help="A `detkit dataset transform` output to train on (sets dataset.dir); with no -c, the recipe "
                   "read from its training split is the whole config.")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None, metavar="N",
              help="Time budget in minutes (sets train.max_minutes; the recipe fits its schedule to it).")
@click.option("--from-scratch", is_flag=True,
              help="Train from nothing even when a COCO detector is downloaded (`detkit checkpoint download`), "
                   "which the recipe otherwise fine-tunes.")
@click.option("--no-check", is_flag=True,
              help="With --dataset-dir: train without checking the training split's annotations first.")
@click.option("--local-workers", "local_workers", type=int, default=None, metavar="N",
              help="Start N worker processes on this machine with a generated TF_CONFIG (127.0.0.1 ports): "
                   "multi-worker training tried locally. On a real cluster, set TF_CONFIG on each node instead.")
def train(config_files: tuple[str, ...], overrides: tuple[str, ...], dataset_dir: Optional[str],
          minutes: Optional[float], from_scratch: bool, no_check: bool, local_workers: Optional[int]) -> None:
    """Train a detector; resumes when the run directory has checkpoints.

    Keys the config leaves unset come from a recipe read from the training data (train.recipe), printed with
    the reason for each choice and written to the run's config.yml and recipe.json. With --dataset-dir, the
    training split's annotations are checked first (`detkit dataset check`): its summary goes to stderr, and
    findings that would break training stop it.
    """
    from detkit.recipe.config import option_overrides, requested_config

    cfg = requested_config(config_files, overrides, dataset_dir, minutes)
    if dataset_dir and not no_check:
        from detkit.datasets.check import check_before_training

        check_before_training(dataset_dir, cfg.dataset.split, echo_err)
    if local_workers is not None:
        from detkit.train.launcher import train_with_local_workers

        train_with_local_workers(local_workers, config_files, tuple(option_overrides(dataset_dir, minutes)) + overrides,
                                 cfg.train.run_name, cfg.train.local_workers_kill_grace_seconds, is_verbose(),
                                 from_scratch)
        return
    from detkit.utils.cpu import apply_onednn_workaround, prepare_bf16_environment

    # Before TensorFlow is imported: oneDNN reads both once.
    apply_onednn_workaround()
    if cfg.train.mixed_precision == "mixed_bfloat16":
        prepare_bf16_environment()
    tensorflow()
    from detkit.train.trainer import train_from_options

    result = train_from_options(config_files, overrides, dataset_dir, minutes, from_scratch)
    if result.chief:  # one result line per cluster, not one per worker
        click.echo(result.run_dir)

"""`detkit train`: train or resume a Faster R-CNN run."""
from __future__ import annotations

import click

from detkit.cli.common import build_config, config_options, tensorflow


@click.command("train")
@config_options
def train(config_files: tuple[str, ...], overrides: tuple[str, ...]) -> None:
    """Train a detector from a config; resumes when the run directory has checkpoints."""
    cfg = build_config(config_files, overrides)
    tensorflow()
    from detkit.train.trainer import train as run_training

    result = run_training(cfg)
    click.echo(result.run_dir)

"""`detkit train`: train or resume a Faster R-CNN run, in this process or as N local workers."""
from __future__ import annotations

from typing import Optional

import click

from detkit.cli.common import build_config, config_options, tensorflow


@click.command("train")
@config_options
@click.option("--local-workers", "local_workers", type=int, default=None, metavar="N",
              help="Start N worker processes on this machine with a generated TF_CONFIG (127.0.0.1 ports): "
                   "multi-worker training tried locally. On a real cluster, set TF_CONFIG on each node instead.")
def train(config_files: tuple[str, ...], overrides: tuple[str, ...], local_workers: Optional[int]) -> None:
    """Train a detector from a config; resumes when the run directory has checkpoints."""
    cfg = build_config(config_files, overrides)
    if local_workers is not None:
        from detkit.train.launcher import train_with_local_workers

        ctx = click.get_current_context(silent=True)
        verbose = bool(ctx and ctx.find_root().obj and ctx.find_root().obj.get("verbose"))
        train_with_local_workers(local_workers, config_files, overrides, cfg.train.run_name,
                                 cfg.train.local_workers_kill_grace_seconds, verbose)
        return
    if cfg.train.mixed_precision == "mixed_bfloat16":
        from detkit.utils.cpu import prepare_bf16_environment

        # Must happen before TensorFlow is imported: oneDNN reads it once.
        prepare_bf16_environment()
    tensorflow()
    from detkit.train.trainer import train as run_training

    result = run_training(cfg)
    if result.chief:  # one result line per cluster, not one per worker
        click.echo(result.run_dir)

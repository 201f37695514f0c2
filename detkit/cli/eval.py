"""`detkit eval`: VOC mAP and COCO metrics of a checkpoint on TFRecord splits, once or watching a run."""
from __future__ import annotations

import json
import sys
from typing import Optional, Sequence

import click

from detkit.cli.common import config_options, run_overrides, tensorflow
from detkit.errors import CheckpointError
from detkit.runs import checkpoint_source

# Lazy imports: `detkit --help` loads every command module, so the library behind a command (TensorFlow, for
# most) is imported when the command runs.


def _log(message: str) -> None:
    click.echo(f"detkit: {message}", err=True)


def eval_overrides(config_files: Sequence[str], overrides: Sequence[str]) -> list[str]:
    """Overrides for the run's config: the -c files' eval section and dataset.dir (if set), then -o."""
    return run_overrides(config_files, overrides, "eval", keep_dataset_dir=True)


@click.command("eval")
@click.option("--checkpoint", metavar="RUN_DIR|CKPT",
              help="A run directory (its newest checkpoint), a checkpoint RUN/checkpoints/ckpt-N, a packed "
                   ".tar, or a directory of `checkpoint export --format openvino`. Default: the run of -c's "
                   "train.job_dir/run_name.")
@config_options
@click.option("--split", "splits", multiple=True, metavar="NAME",
              help="Split to evaluate (repeatable; default eval.split).")
@click.option("--dataset-dir", "dataset_dirs", multiple=True, type=click.Path(file_okay=False),
              help="A `detkit dataset transform` output (repeatable, paired with --split; default dataset.dir "
                   "of the run).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per checkpoint and split on stdout.")
@click.option("--watch", is_flag=True, help="Keep evaluating each new checkpoint of the run until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="With --watch: seconds between looks for a new checkpoint.")
@click.option("--timeout", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
              help="With --watch: stop after this many seconds without a new checkpoint (0 = never).")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Also write DIR/report.html and DIR/report.json: PR curves, confusion matrix, error types, AP "
                   "by object size and the worst photos (DIR/LABEL/ with several splits; with --watch, the newest "
                   "checkpoint's).")
@click.option("--min-prob", type=click.FloatRange(0.0, 1.0), default=None,
              help="Score threshold of the TP/FP/FN counts and the confusion matrix (default: the one with the "
                   "best F1 over all classes).")
@click.option("--no-record", is_flag=True,
              help="Do not write TensorBoard summaries or RUN/metrics.json.")
@click.option("--progress/--no-progress", "show_progress", default=True, help="Progress bar on stderr.")
def evaluate(checkpoint: Optional[str], config_files: tuple[str, ...], overrides: tuple[str, ...],
             splits: tuple[str, ...], dataset_dirs: tuple[str, ...], as_json: bool, watch: bool,
             interval: float, timeout: float, report_dir: Optional[str], min_prob: Optional[float], no_record: bool,
             show_progress: bool) -> None:
    """Evaluate a checkpoint: VOC mAP at eval.iou_threshold (per class; all-point and VOC07), COCO AP/AR, and
    TP/FP/FN and the confusion matrix at a score threshold.

    Results go to stdout (a table, or JSON with --json), to TensorBoard under RUN/eval_<split>/ at the
    checkpoint's step (with PR curves and the confusion matrix), and to RUN/metrics.json (shown by `detkit
    checkpoint list`). --report DIR adds a page of figures saying why the detector fails (docs/report.md).
    """
    if not checkpoint and not config_files:
        raise CheckpointError(
            "no checkpoint given: pass --checkpoint RUN_DIR (or RUN_DIR/checkpoints/ckpt-N), or -c config.yml "
            "of a trained run; train one with `detkit train -c config.yml`"
        )
    if len(splits) > 1 and len(dataset_dirs) > 1 and len(splits) != len(dataset_dirs):
        raise click.UsageError(
            f"{len(splits)} --split and {len(dataset_dirs)} --dataset-dir options: give one of them once, "
            "or both the same number of times (paired in order)"
        )
    overrides_for_run = eval_overrides(config_files, overrides)
    with checkpoint_source(checkpoint, config_files, overrides) as source:
        tensorflow()
        from detkit.eval.evaluator import Evaluator, make_targets
        from detkit.eval.report import format_table

        def show(result: dict) -> None:
            if as_json:
                click.echo(json.dumps(result))
            else:
                click.echo(format_table(result))
                click.echo("")
            sys.stdout.flush()

        evaluator = Evaluator(source, overrides_for_run)
        cfg = evaluator.config
        targets = make_targets(splits, dataset_dirs, cfg.dataset.dir, cfg.eval.split)
        first = evaluator.first_entry()
        if watch:
            evaluator.check_watchable()
        if report_dir:
            from detkit.eval.evaluator import report_directory
            from detkit.eval.report_page import check_replaceable

            for target in targets:  # before the evaluation, not after minutes of it
                check_replaceable(report_directory(report_dir, targets, target))
        evaluator.evaluate_checkpoint(first, targets, show, show_progress, not no_record, _log, min_prob, report_dir)
        if watch:
            evaluator.watch(first, targets, show, interval, timeout, show_progress, not no_record, _log, min_prob,
                            report_dir)

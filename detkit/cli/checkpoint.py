"""`detkit checkpoint`: list, inspect, delete, export (SavedModel), pack and unpack runs and checkpoints."""
from __future__ import annotations

import json
import os
import sys
from typing import Optional

import click

from detkit import runs
from detkit.runs.lock import check_not_training
from detkit.runs.info import checkpoint_rows, directory_size, human_size, metrics_summary, run_summary
from detkit.cli.common import echo_err, tensorflow
from detkit.config.schema import TrainConfig
from detkit.errors import CheckpointError, ConfigError, DetkitError

# Lazy imports: `detkit --help` loads every command module, so the library behind a command (TensorFlow, for
# most) is imported when the command runs.

@click.group("checkpoint")
def checkpoint_group() -> None:
    """List, inspect, delete, export, pack and unpack runs; download or import pretrained COCO detectors."""


@checkpoint_group.command("list")
@click.argument("job_dir", required=False, metavar="[JOB_DIR]")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run (downloaded models carry \"model\").")
def list_command(job_dir: Optional[str], as_json: bool) -> None:
    """Runs under JOB_DIR (default ./jobs, the default train.job_dir) with their checkpoints: step, date,
    size and the metrics of `detkit eval`. The newest checkpoint is marked with *. Without JOB_DIR, then
    the models of `detkit checkpoint download` ($DETKIT_HOME or ~/.cache/detkit)."""
    from detkit.pretrained import zoo

    explicit = job_dir is not None
    job_dir = job_dir or TrainConfig.job_dir
    run_dirs = runs.find_runs(job_dir) if explicit or os.path.isdir(job_dir) else []
    models = [] if explicit else zoo.downloaded()
    if as_json:
        for run in run_dirs:
            click.echo(json.dumps({"run_dir": run, "checkpoints": checkpoint_rows(run)}))
        for model in models:
            click.echo(json.dumps({"run_dir": zoo.model_dir(model.name), "model": model.name, "arch": model.arch,
                                   "coco_ap": model.coco_ap, "checkpoints": checkpoint_rows(zoo.model_dir(model.name))}))
        return
    if not run_dirs:
        click.echo(f"no runs under {job_dir}", err=True)
    else:
        table = []
        for run in run_dirs:
            rows = checkpoint_rows(run)
            if not rows:
                table.append([run, "(no checkpoints)", "", "", "", ""])
            for n, row in enumerate(rows):
                metric = metrics_summary(row["metrics"])
                table.append([run if n == 0 else "", row["name"] + (" *" if row["latest"] else ""), str(row["step"]),
                              row["date"], human_size(row["size"]), metric])
        _echo_table(["RUN", "CHECKPOINT", "STEP", "DATE", "SIZE", "METRICS"], table)
    if models:
        click.echo(f"\ndownloaded models ({zoo.cache_dir()}; * = the default of predict and server web)")
        default = zoo.default_model()[0]
        table = [[m.name + (" *" if m.name == default else ""), m.arch, f"{m.coco_ap:.1f}",
                  human_size(directory_size(zoo.model_dir(m.name))), zoo.model_dir(m.name)]
                 for m in sorted(models, key=lambda m: zoo.DEFAULT_ORDER.index(m.name))]
        _echo_table(["MODEL", "ARCH", "COCO AP", "SIZE", "RUN"], table)
    elif not explicit:
        click.echo("no downloaded models (`detkit checkpoint download accurate` fetches one)", err=True)


def _echo_table(header: list[str], table: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in table + [header]) for i in range(len(header))]
    for row in [header] + table:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


@checkpoint_group.command("info")
@click.argument("path", metavar="RUN_OR_CKPT")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info_command(path: str, as_json: bool) -> None:
    """Config summary, classes, checkpoints (steps, dates, sizes) and metrics of a run or checkpoint."""
    target = runs.resolve_run_path(path)
    info = run_summary(target.run_dir)
    rows = checkpoint_rows(target.run_dir)
    if target.checkpoint is not None:
        rows = [r for r in rows if r["name"] == target.checkpoint.name]
        info["checkpoint"] = target.checkpoint.prefix
    info["checkpoints"] = rows
    info["run_size"] = directory_size(target.run_dir)
    if as_json:
        click.echo(json.dumps(info))
        return
    lines = [f"run          {target.run_dir}"]
    if target.checkpoint is not None:
        lines.append(f"checkpoint   {target.checkpoint.prefix}")
    classes = info.get("classes")
    lines.append(f"classes      {len(classes)}: {', '.join(classes)}" if classes else "classes      (no classes.json)")
    cfg = info.get("config")
    if cfg:
        tr = cfg["train"]
        steps = f"{tr['num_steps']} steps" if tr["num_steps"] else f"{tr['num_epochs']:g} epochs"
        lines += [
            f"model        {cfg['architecture']}, {cfg['backbone']} (weights {cfg['weights']}), "
            f"{'two-stage' if cfg['rcnn'] else 'RPN only'}, anchors {cfg['anchors']['sizes']} x {cfg['anchors']['ratios']}",
            f"images       min side {cfg['image']['min_size']}, max side {cfg['image']['max_size']}",
            f"dataset      {cfg['dataset']['dir']} (split {cfg['dataset']['split']})",
            f"training     {steps}, batch {tr['batch_size']}, {tr['optimizer']} lr {tr['learning_rate']:g} "
            f"({tr['schedule']})",
            f"predict      min_prob {cfg['predict']['min_prob']:g}, max_detections {cfg['predict']['max_detections']}",
        ]
    elif info.get("config_error"):
        lines.append(f"config       unreadable: {info['config_error']}")
    if rows:
        lines.append(f"checkpoints  {len(rows)} (steps {', '.join(str(r['step']) for r in rows)})")
        for row in rows:
            metric = metrics_summary(row["metrics"])
            lines.append(f"  {row['name']}{' *' if row['latest'] else ''}  step {row['step']}  {row['date']}  "
                         f"{human_size(row['size'])}" + (f"  {metric}" if metric else ""))
    else:
        lines.append("checkpoints  none")
    lines.append(f"size         {human_size(info['run_size'])} (whole run directory)")
    click.echo("\n".join(lines))


@checkpoint_group.command("delete")
@click.argument("path", metavar="RUN_OR_CKPT")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def delete_command(path: str, yes: bool) -> None:
    """Delete a whole run directory, or one checkpoint of a run (its files, state entry and metrics)."""
    target = runs.resolve_run_path(path)
    if target.checkpoint is not None:
        check_not_training(target.run_dir)  # before asking
        what = f"checkpoint {target.checkpoint.prefix} ({human_size(target.checkpoint.size)})"
    else:
        runs.check_deletable_run(target.run_dir)  # before asking: refuse what is not exactly a run
        count = len(runs.list_checkpoints(target.run_dir))
        what = (f"run {target.run_dir} ({count} checkpoint(s), "
                f"{human_size(directory_size(target.run_dir))})")
    if not yes:
        if not sys.stdin or not sys.stdin.isatty():
            raise DetkitError(f"not deleting {what} without confirmation: pass --yes")
        click.confirm(f"Delete {what}?", abort=True)
    try:
        if target.checkpoint is not None:
            runs.delete_checkpoint(target.checkpoint)
        else:
            runs.delete_run(target.run_dir)
    except OSError as exc:
        raise DetkitError(f"{path}: cannot delete ({exc.strerror or exc})") from None
    click.echo(f"deleted {what}", err=True)


@checkpoint_group.command("export")
@click.argument("path", metavar="RUN_OR_CKPT")
@click.option("--output", "output", required=True, type=click.Path(file_okay=False),
              help="Directory for the exported model.")
@click.option("--format", "fmt", type=click.Choice(["saved_model", "openvino"]), default="saved_model",
              show_default=True, help="saved_model (TensorFlow Serving, tf.saved_model.load) or openvino (OpenVINO's "
              "CPU runtime; pip install \"detkit[openvino]\"; predict, eval and server take the directory as "
              "--checkpoint).")
@click.option("--min-prob", type=click.FloatRange(0.0, 1.0), help="Score threshold (default predict.min_prob).")
@click.option("--max-detections", type=click.IntRange(min=1), help="Cap (default predict.max_detections).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory (only an earlier export).")
@click.option("--int8", is_flag=True, help="OpenVINO in int8: calibrate on --calibration-split, then evaluate the "
              "float32 and the int8 model on --eval-split and record both in export.json.")
@click.option("--dataset-dir", type=click.Path(file_okay=False), help="Dataset for --int8 (default: the run's "
              "dataset.dir).")
@click.option("--calibration-split", help="Split --int8 calibrates on (default: the run's dataset.split).")
@click.option("--calibration-images", type=click.IntRange(1, 1000), default=300, show_default=True,
              help="At most this many photos of --calibration-split.")
@click.option("--eval-split", help="Split both models are measured on (default: the run's eval.split).")
@click.option("--max-ap50-loss", type=click.FloatRange(0.0, 1.0), default=0.01, show_default=True,
              help="AP50 int8 may lose on the calibration photos before layers go back to float32.")
@click.option("-o", "--override", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a value of the run's config, e.g. -o predict.min_prob=0.3 (repeatable).")
def export_command(path: str, output: str, fmt: str, min_prob: Optional[float], max_detections: Optional[int],
                   overwrite: bool, int8: bool, dataset_dir: Optional[str], calibration_split: Optional[str],
                   calibration_images: int, eval_split: Optional[str], max_ap50_loss: float,
                   overrides: tuple[str, ...]) -> None:
    """Export a run's newest (or the given) checkpoint as a TensorFlow SavedModel or an OpenVINO model.

    SavedModel, signature serving_default: image_bytes (string scalar, encoded JPEG/PNG) -> boxes [N, 4] (xmin,
    ymin, xmax, ymax, original pixels), classes [N] (1-based), scores [N], labels [N], class_names [C];
    DIR/assets/ holds config.yml and classes.json. OpenVINO: DIR/model.xml takes RGB pixels uint8 [H, W, 3] and
    gives boxes, scores and labels; DIR holds config.yml, classes.json and export.json beside it. --int8 says
    what int8 costs (AP50, COCO AP and time of both models) on stderr and in export.json.
    """
    if int8 and fmt != "openvino":
        raise ConfigError("--int8: only with --format openvino")
    with runs.checkpoint_source(path, (), ()) as source:
        tensorflow()
        kwargs = dict(min_prob=min_prob, max_detections=max_detections, overwrite=overwrite, overrides=overrides)
        if int8:
            from detkit.eval.int8 import export_int8

            info, report = export_int8(source, output, dataset_dir, calibration_split, calibration_images,
                                       eval_split, max_ap50_loss, log=lambda m: echo_err(f"detkit: {m}"),
                                       **kwargs)
            echo_err(f"detkit: {report.summary()}")
            if report.ap50_loss > max_ap50_loss:
                echo_err(f"detkit: warning: int8 lost {report.ap50_loss:.4f} AP50 on {report.eval_split}, more than "
                         f"--max-ap50-loss {max_ap50_loss:g} (the float32 export has none of it)")
        elif fmt == "openvino":
            from detkit.inference.openvino import export_openvino

            info = export_openvino(source, output, **kwargs)
        else:
            from detkit.inference.export import export_saved_model

            info = export_saved_model(source, output, **kwargs)
    click.echo(f"exported {info.checkpoint} (step {info.step}, min_prob {info.min_prob:g}) to {info.output_dir}",
               err=True)
    click.echo(info.output_dir)


@checkpoint_group.command("pack")
@click.argument("path", metavar="RUN_OR_CKPT")
@click.option("--output", "output", required=True, type=click.Path(dir_okay=False),
              help="The .tar (or .tar.gz) file to write.")
@click.option("--checkpoint", "checkpoint", metavar="ckpt-N|N",
              help="Which checkpoint of the run (default: the newest, or the one PATH names).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --output file (only an earlier pack).")
def pack_command(path: str, output: str, checkpoint: Optional[str], overwrite: bool) -> None:
    """Pack one checkpoint with its config and class map into a single file (for `predict --checkpoint`)."""
    info = runs.pack(path, output, checkpoint, overwrite=overwrite)
    click.echo(f"packed {info.checkpoint} (step {info.step}) into {info.output} ({human_size(info.size)})",
               err=True)
    click.echo(info.output)


@checkpoint_group.command("unpack")
@click.argument("file", metavar="FILE.tar")
@click.option("--output", "output", required=True, type=click.Path(file_okay=False),
              help="The run directory to create.")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing non-empty output directory (only an earlier run directory).")
def unpack_command(file: str, output: str, overwrite: bool) -> None:
    """Unpack a packed checkpoint into a run directory usable by predict, eval and export."""
    if not os.path.isfile(file):
        raise CheckpointError(f"{file}: no such file")
    manifest = runs.read_manifest(file)
    run_dir = runs.unpack(file, output, overwrite=overwrite)
    click.echo(f"unpacked {manifest.get('checkpoint')} (step {manifest.get('step')}) into {run_dir}", err=True)
    click.echo(run_dir)


def _zoo_help() -> str:
    from detkit.pretrained import zoo

    lines = [f"  {m.name:<9} {m.arch} (COCO box AP {m.coco_ap}, torchvision; {m.about})" for m in zoo.MODELS.values()]
    return "\n".join(lines)


@checkpoint_group.command("download", help=f"""Download a COCO detector (torchvision's published weights) and
import it as a run into $DETKIT_HOME/models/NAME (default ~/.cache/detkit).

\b
NAME:
{_zoo_help()}

The file's SHA-256 is checked against its name. `detkit predict IMAGE` with no --checkpoint uses the
downloaded model (accurate, else mobile, else fast). Prints the run directory.""")
@click.argument("name", metavar="NAME")
@click.option("--progress/--no-progress", "show_progress", default=True, show_default=True,
              help="Progress bar (bytes, rate, ETA) on stderr.")
def download_command(name: str, show_progress: bool) -> None:
    """Download a COCO detector and import it as a run (the help text is built from the model registry)."""
    from detkit.pretrained import zoo

    run_dir = zoo.download(name, show_progress=show_progress, log=lambda m: click.echo(f"detkit: {m}", err=True))
    click.echo(run_dir)


@checkpoint_group.command("import")
@click.argument("file", metavar="FILE.pth", type=click.Path(dir_okay=False))
@click.option("--output", "output", required=True, type=click.Path(file_okay=False),
              help="The run directory to create.")
@click.option("--arch", metavar="NAME",
              help="fasterrcnn_resnet50_fpn, fasterrcnn_mobilenet_v3_large_fpn or "
                   "fasterrcnn_mobilenet_v3_large_320_fpn (default: from the weights' keys and, as the two MobileNets "
                   "share them, from the file name, which must then spell the arch as torchvision's files do).")
@click.option("--classes", "classes", metavar="coco|A,B,...|FILE",
              help="Class names in label order, without background: coco (torchvision's 90 COCO slots; the "
                   "unused N/A slots are never reported), a comma-separated list, or a file (one name per line, "
                   "or classes.json). Default: coco when the weights have 90 classes.")
@click.option("--overwrite", is_flag=True, help="Replace a run that an earlier import wrote to --output.")
def import_command(file: str, output: str, arch: Optional[str], classes: Optional[str], overwrite: bool) -> None:
    """Turn a torchvision Faster R-CNN state dict (.pth) into a run directory for predict, eval, server,
    export and train.init_from. The file is read without PyTorch and no code in it is run."""
    from detkit.pretrained.importer import import_checkpoint

    tensorflow()
    run_dir = import_checkpoint(file, output, arch=arch, classes=classes, overwrite=overwrite)
    click.echo(f"detkit: imported {file} into {run_dir}", err=True)
    click.echo(run_dir)

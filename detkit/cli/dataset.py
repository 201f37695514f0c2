"""`detkit dataset transform | check | export | inspect | merge | suspects`: build, check, export and combine
TFRecord datasets, and find label mistakes with a trained model."""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Callable, Optional

import click

from detkit.cli.common import echo_err, tensorflow

# Lazy imports: `detkit --help` loads every command module, so the library behind a command (TensorFlow, for
# most) is imported when the command runs.

if TYPE_CHECKING:
    from detkit.datasets.readers import Source

_SHARD_HELP = "Images per shard file (default 1000)."


def _quiet_tf_unless_verbose(ctx: click.Context) -> None:
    """With -v, import TensorFlow now so its logs show; otherwise the library imports it quietly when needed."""
    root = ctx.find_root()
    if root.obj and root.obj.get("verbose"):
        tensorflow(ctx)


def _shards(num_shards: Optional[int], shard_size: Optional[int]) -> None:
    """Refuse --num-shards together with --shard-size."""
    if num_shards is not None and shard_size is not None:
        raise click.UsageError("give --num-shards or --shard-size, not both")


@click.group("dataset")
def dataset_group() -> None:
    """Convert annotations to TFRecords; check, export, inspect and merge them; find label mistakes."""


_TYPES = ["voc", "coco", "csv", "yolo", "labelme"]


def _source_options(required: bool) -> Callable:
    """--type, --split, --data-dir, --annotations, --images-dir, --only-classes, --skip-bad: a source to read."""
    def add(func: Callable) -> Callable:
        for decorator in reversed([
            click.option("--type", "fmt", type=click.Choice(_TYPES), required=required, default=None,
                         help="Annotation format."),
            click.option("--split", "splits", multiple=True, required=required, metavar="NAME",
                         help="Split (repeatable): VOC ImageSets/Main/NAME.txt, COCO instances_NAME.json, CSV "
                              "NAME.csv, YOLO data.yaml's NAME key, LabelMe NAME/."),
            click.option("--data-dir", type=click.Path(), default=None,
                         help="Dataset root in the format's layout (VOCdevkit, annotations/+images/ or XML beside "
                              "photos; COCO annotations/instances_NAME.json + NAME/; CSV NAME.csv + NAME/; YOLO "
                              "data.yaml's folder; LabelMe NAME/*.json or *.json)."),
            click.option("--annotations", type=click.Path(), default=None,
                         help="Instead of --data-dir: the COCO JSON / CSV file, VOC XML or LabelMe JSON directory, "
                              "or YOLO data.yaml / classes.txt of the one split."),
            click.option("--images-dir", type=click.Path(), default=None,
                         help="With --annotations: the images directory."),
            click.option("--only-classes", default=None, metavar="A,B",
                         help="Keep boxes of these classes only; images left without boxes are kept as negatives."),
            click.option("--skip-bad", is_flag=True,
                         help="Skip malformed annotations and missing images (listed in the summary) instead of "
                              "failing."),
        ]):
            func = decorator(func)
        return func
    return add


def _source(data_dir: Optional[str], annotations: Optional[str], images_dir: Optional[str]) -> "Source":
    """The Source of the source options."""
    from detkit.datasets.readers import Source

    return Source(data_dir=data_dir, annotations=annotations, images_dir=images_dir)


def _classes(only_classes: Optional[str]) -> Optional[list[str]]:
    """--only-classes A,B as a list."""
    return [c.strip() for c in only_classes.split(",")] if only_classes is not None else None


@dataset_group.command("transform")
@click.option("--output-dir", required=True, type=click.Path(file_okay=False),
              help="Where <split>-NNNNN-of-NNNNN.tfrecord, <split>-summary.json and classes.json go.")
@_source_options(required=True)
@click.option("--class-examples", type=click.IntRange(min=1), default=None, metavar="N",
              help="At most N boxes per class and split: images are taken in order while all their classes fit.")
@click.option("--limit-examples", type=click.IntRange(min=1), default=None, metavar="N",
              help="At most N images per split.")
@click.option("--overwrite", is_flag=True, help="Replace an existing classes.json and shards of these splits.")
@click.option("--num-shards", type=click.IntRange(min=1), default=None, metavar="N", help="Number of shard files.")
@click.option("--shard-size", type=click.IntRange(min=1), default=None, metavar="N", help=_SHARD_HELP)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Threads reading and validating images.")
@click.option("--no-check", is_flag=True, help="Convert without running `dataset check` first.")
@click.pass_context
def transform(ctx: click.Context, fmt: str, output_dir: str, splits: tuple[str, ...], data_dir: Optional[str],
              annotations: Optional[str], images_dir: Optional[str], only_classes: Optional[str], skip_bad: bool,
              class_examples: Optional[int], limit_examples: Optional[int], overwrite: bool,
              num_shards: Optional[int], shard_size: Optional[int], workers: int, no_check: bool) -> None:
    """Convert VOC, COCO, CSV, YOLO or LabelMe annotations into sharded TFRecords.

    `dataset check` runs first: its summary goes to stderr, and findings that would break training stop the
    conversion before anything is written. Images are validated by decoding and stored with their original
    bytes. Boxes sticking out of the image are clipped, empty ones dropped; both are counted in
    <split>-summary.json.
    """
    from detkit.datasets.check.report import format_text
    from detkit.datasets.transform import CheckFailed, TransformOptions, transform as run

    _shards(num_shards, shard_size)
    _quiet_tf_unless_verbose(ctx)
    opts = TransformOptions(
        fmt=fmt, output_dir=output_dir, splits=list(splits), source=_source(data_dir, annotations, images_dir),
        only_classes=_classes(only_classes), class_examples=class_examples, limit_examples=limit_examples,
        overwrite=overwrite, skip_bad=skip_bad, num_shards=num_shards, shard_size=shard_size, workers=workers,
        show_progress=True, check=not no_check,
    )
    try:
        summaries = run(opts)
    except CheckFailed as exc:
        echo_err(format_text(exc.report, limit=5))
        raise
    for split, s in summaries.items():
        click.echo(f"{split}: {s['images']} images ({s['negatives']} negatives), {s['boxes']} boxes, "
                   f"{len(s['shards'])} shard(s) in {output_dir}")
        notes = [f"{len(s['skipped'])} skipped" if s["skipped"] else "",
                 f"{s['clipped_boxes']} boxes clipped" if s["clipped_boxes"] else "",
                 f"{s['dropped_boxes']} boxes dropped" if s["dropped_boxes"] else "",
                 f"{len(s['reencoded'])} images re-encoded" if s["reencoded"] else "",
                 f"{len(s['size_mismatches'])} size mismatches" if s["size_mismatches"] else ""]
        notes += [f"{n} {note}" for note, n in s["reader_notes"].items()]
        notes = [n for n in notes if n]
        if notes:
            echo_err(f"{split}: {', '.join(notes)}; see {os.path.join(output_dir, split + '-summary.json')}")
    for split, s in summaries.items():
        if "check" in s:
            found = ", ".join(f"{k} {n}" for k, n in s["check"]["kinds"].items()) or "nothing found"
            echo_err(f"{split}: check: {found} (`detkit dataset check` with the same arguments lists them)")


@dataset_group.command("check")
@click.argument("directory", required=False, type=click.Path())
@_source_options(required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per finding on stdout.")
@click.option("--all", "show_all", is_flag=True, help="List every finding (the text lists 10 of each kind).")
@click.option("--fix", "fix_dir", type=click.Path(file_okay=False), default=None, metavar="OUT",
              help="Write a corrected copy to OUT as TFRecords (as `dataset transform` would); never changes the "
                   "originals.")
@click.option("--merge-classes", "merges", multiple=True, metavar="FROM=TO",
              help="Rename class FROM to TO (repeatable), e.g. --merge-classes Car=car.")
@click.option("--overwrite", is_flag=True, help="With --fix: replace classes.json and shards already in OUT.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Threads reading images.")
@click.pass_context
def check(ctx: click.Context, directory: Optional[str], fmt: Optional[str], splits: tuple[str, ...],
          data_dir: Optional[str], annotations: Optional[str], images_dir: Optional[str], only_classes: Optional[str],
          skip_bad: bool, as_json: bool, show_all: bool, fix_dir: Optional[str], merges: tuple[str, ...],
          overwrite: bool, workers: int) -> None:
    """Find what is wrong with a dataset: a source (--type and the arguments of `dataset transform`) or a
    converted DIRECTORY.

    Boxes outside the image or of no size, duplicate boxes, the same photo twice or in two splits, EXIF-rotated
    photos whose boxes fit the other orientation, unreadable images, class names differing only by case,
    spacing or plural, rare or absent classes, images without boxes. Exit code 1 when a finding would break
    training.
    """
    from detkit.datasets.check import CheckOptions, check as run, failure_message, parse_merges
    from detkit.datasets.check.report import format_text, json_lines, summary_line
    from detkit.datasets.readers import CONVERTED, Source

    if (directory is None) == (fmt is None):
        raise click.UsageError("give a converted DIRECTORY, or --type with the arguments of `dataset transform`")
    if directory is not None and (data_dir or annotations or images_dir):
        raise click.UsageError("a converted DIRECTORY is read as it is: --data-dir/--annotations/--images-dir "
                               "are for a source given with --type")
    if overwrite and not fix_dir:
        raise click.UsageError("--overwrite goes with --fix OUT")
    _quiet_tf_unless_verbose(ctx)
    source = Source(data_dir=directory) if directory is not None else _source(data_dir, annotations, images_dir)
    opts = CheckOptions(fmt=CONVERTED if directory is not None else fmt or "", splits=list(splits), source=source,
                        skip_bad=skip_bad, only_classes=_classes(only_classes), merge_classes=parse_merges(merges),
                        workers=workers, show_progress=True)
    if fix_dir:
        from detkit.datasets.check.fix import fix

        report, summaries = fix(opts, fix_dir, overwrite)
    else:
        report, summaries = run(opts), None
    if as_json:
        for line in json_lines(report):
            click.echo(line)
        echo_err(summary_line(report))
    else:
        click.echo(format_text(report, limit=0 if show_all else 10))
    if summaries is not None:
        for split, s in summaries.items():
            changes = ", ".join(f"{n} {what}" for what, n in s["fixes"].items()) or "nothing to change"
            echo_err(f"fixed {split}: {s['images']} images, {s['boxes']} boxes in {fix_dir} ({changes})")
    elif report.errors:
        from detkit.errors import DatasetError

        raise DatasetError(failure_message(report, "convert as it is with `dataset transform --no-check`"))


@dataset_group.command("export")
@click.argument("directory", required=False, type=click.Path())
@click.option("--to", "to", type=click.Choice(["coco", "voc", "yolo"]), required=True,
              help="coco: annotations/instances_SPLIT.json + SPLIT/; voc: a VOCdevkit; yolo: data.yaml + "
                   "images/SPLIT/ + labels/SPLIT/.")
@click.option("--output-dir", required=True, type=click.Path(file_okay=False), help="The folder to write.")
@_source_options(required=False)
@click.option("--overwrite", is_flag=True, help="Replace an earlier export in --output-dir.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Threads reading and validating images.")
@click.pass_context
def export(ctx: click.Context, directory: Optional[str], to: str, output_dir: str, fmt: Optional[str],
           splits: tuple[str, ...], data_dir: Optional[str], annotations: Optional[str], images_dir: Optional[str],
           only_classes: Optional[str], skip_bad: bool, overwrite: bool, workers: int) -> None:
    """Write a converted DIRECTORY (every split, or --split), or a source read with --type, as COCO, VOC or YOLO.

    Images are written with the bytes the records hold; converting the export again gives the same records.
    """
    from detkit.datasets.export import ExportOptions, export as run
    from detkit.datasets.readers import CONVERTED, Source

    if (directory is None) == (fmt is None):
        raise click.UsageError("give a converted DIRECTORY, or --type with the arguments of `dataset transform`")
    if directory is not None and (data_dir or annotations or images_dir):
        raise click.UsageError("a converted DIRECTORY is read as it is: --data-dir/--annotations/--images-dir "
                               "are for a source given with --type")
    _quiet_tf_unless_verbose(ctx)
    source = Source(data_dir=directory) if directory is not None else _source(data_dir, annotations, images_dir)
    report = run(ExportOptions(to=to, output_dir=output_dir, fmt=CONVERTED if directory is not None else fmt or "",
                               source=source, splits=list(splits), only_classes=_classes(only_classes),
                               skip_bad=skip_bad, overwrite=overwrite, workers=workers, show_progress=True))
    for split, s in report["splits"].items():
        click.echo(f"{split}: {s['images']} images, {s['boxes']} boxes as {to} in {output_dir}")
        if s["skipped"]:
            echo_err(f"{split}: {len(s['skipped'])} images skipped (first: {s['skipped'][0]['file']}: "
                     f"{s['skipped'][0]['reason']})")
    for what, n in report["flags_dropped"].items():
        echo_err(f"{n} {what}: {to} has no such flag")


@dataset_group.command("inspect")
@click.argument("directory", type=click.Path())
@click.option("--split", required=True, metavar="NAME", help="Split to inspect.")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
@click.option("--draw", type=click.IntRange(min=0), default=0, metavar="N",
              help="Also write the first N images with their boxes drawn (needs --draw-dir).")
@click.option("--draw-dir", type=click.Path(file_okay=False), default=None, help="Where --draw writes JPEGs.")
@click.pass_context
def inspect(ctx: click.Context, directory: str, split: str, as_json: bool, draw: int, draw_dir: Optional[str]) -> None:
    """Counts per class, image/box size statistics of one split, and the training recipe they give."""
    from detkit.datasets.inspect import draw_split
    from detkit.recipe.config import inspect_report

    if draw and not draw_dir:
        raise click.UsageError("--draw needs --draw-dir")
    _quiet_tf_unless_verbose(ctx)
    stats, text = inspect_report(directory, split)
    click.echo(json.dumps(stats, indent=2) if as_json else text)
    if draw:
        written = draw_split(directory, split, draw, draw_dir or "")
        echo_err(f"drew {len(written)} images in {draw_dir}")


@dataset_group.command("merge")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--output-dir", required=True, type=click.Path(file_okay=False), help="The merged dataset directory.")
@click.option("--split", "splits", multiple=True, metavar="NAME",
              help="Split to merge (repeatable; default: every split of any input).")
@click.option("--overwrite", is_flag=True, help="Replace an existing classes.json and shards of these splits.")
@click.option("--num-shards", type=click.IntRange(min=1), default=None, metavar="N", help="Number of shard files.")
@click.option("--shard-size", type=click.IntRange(min=1), default=None, metavar="N", help=_SHARD_HELP)
@click.pass_context
def merge(ctx: click.Context, inputs: tuple[str, ...], output_dir: str, splits: tuple[str, ...], overwrite: bool,
          num_shards: Optional[int], shard_size: Optional[int]) -> None:
    """Combine splits of several converted datasets; labels are remapped by class name."""
    from detkit.datasets.merge import MergeOptions, merge as run

    _shards(num_shards, shard_size)
    _quiet_tf_unless_verbose(ctx)
    summaries = run(MergeOptions(inputs=list(inputs), output_dir=output_dir, splits=list(splits) or None,
                                 overwrite=overwrite, num_shards=num_shards, shard_size=shard_size, show_progress=True))
    for split, s in summaries.items():
        click.echo(f"{split}: {s['images']} images from {len(s['sources'])} input(s), {s['boxes']} boxes, "
                   f"{len(s['classes'])} classes, in {output_dir}")


@dataset_group.command("suspects")
@click.option("--checkpoint", required=True, type=click.Path(), metavar="RUN",
              help="A run trained on the data (a run directory, ckpt-N prefix or packed .tar).")
@click.option("--split", default="train", show_default=True, metavar="NAME", help="Split to look at.")
@click.option("--dataset-dir", type=click.Path(), default=None, metavar="DIR",
              help="The converted dataset (default: the run's dataset.dir).")
@click.option("--top", type=click.IntRange(min=0), default=20, show_default=True, metavar="N",
              help="How many suspects the text lists (0: all; --json lists all).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per suspect on stdout, likeliest first.")
@click.option("--draw", type=click.IntRange(min=0), default=0, metavar="N",
              help="Also draw the N likeliest suspects on their images (needs --draw-dir).")
@click.option("--draw-dir", type=click.Path(file_okay=False), default=None, help="Where --draw writes JPEGs.")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N", help="Look at the first N images only.")
@click.pass_context
def suspects(ctx: click.Context, checkpoint: str, split: str, dataset_dir: Optional[str], top: int, as_json: bool,
             draw: int, draw_dir: Optional[str], limit: Optional[int]) -> None:
    """The likeliest label mistakes of a split, by a model trained on it: unlabelled objects (missing_box),
    boxes of another class (swapped_label), boxes around nothing or misplaced (wrong_box), each with a score."""
    if draw and not draw_dir:
        raise click.UsageError("--draw needs --draw-dir")
    tensorflow(ctx)
    from detkit.eval.suspects import draw_suspects, find_suspects, format_suspects

    found, names, directory = find_suspects(checkpoint, split, dataset_dir, limit)
    if as_json:
        for rank, s in enumerate(found, start=1):
            click.echo(json.dumps(s.as_dict(names, rank)))
    else:
        click.echo(format_suspects(found, names, top))
    if draw:
        written = draw_suspects(found, names, directory, split, draw, draw_dir or "")
        echo_err(f"drew {len(written)} suspects in {draw_dir}")


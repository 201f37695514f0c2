"""`detkit dataset transform | inspect | merge`: build, check and combine TFRecord datasets."""
from __future__ import annotations

import json
import os
from typing import Optional

import click

from detkit.cli.common import echo_err, tensorflow

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
    """Convert annotations to TFRecords, inspect and merge them."""


@dataset_group.command("transform")
@click.option("--type", "fmt", type=click.Choice(["voc", "coco", "csv"]), required=True,
              help="Annotation format.")
@click.option("--output-dir", required=True, type=click.Path(file_okay=False),
              help="Where <split>-NNNNN-of-NNNNN.tfrecord, <split>-summary.json and classes.json go.")
@click.option("--split", "splits", multiple=True, required=True, metavar="NAME",
              help="Split to convert (repeatable): VOC ImageSets/Main/NAME.txt, COCO instances_NAME.json, "
                   "CSV NAME.csv.")
@click.option("--data-dir", type=click.Path(), default=None,
              help="Dataset root in the format's layout (VOCdevkit or annotations/+images/; "
                   "COCO annotations/instances_NAME.json + NAME/; CSV NAME.csv + NAME/).")
@click.option("--annotations", type=click.Path(), default=None,
              help="Instead of --data-dir: the COCO JSON / CSV file (or VOC XML directory) of the one split.")
@click.option("--images-dir", type=click.Path(), default=None, help="With --annotations: the images directory.")
@click.option("--only-classes", default=None, metavar="A,B",
              help="Keep boxes of these classes only; images left without boxes are kept as negatives.")
@click.option("--class-examples", type=click.IntRange(min=1), default=None, metavar="N",
              help="At most N boxes per class and split: images are taken in order while all their classes fit.")
@click.option("--limit-examples", type=click.IntRange(min=1), default=None, metavar="N",
              help="At most N images per split.")
@click.option("--overwrite", is_flag=True, help="Replace an existing classes.json and shards of these splits.")
@click.option("--skip-bad", is_flag=True,
              help="Skip malformed annotations and missing images (listed in the summary) instead of failing.")
@click.option("--num-shards", type=click.IntRange(min=1), default=None, metavar="N", help="Number of shard files.")
@click.option("--shard-size", type=click.IntRange(min=1), default=None, metavar="N", help=_SHARD_HELP)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Threads reading and validating images.")
@click.pass_context
def transform(ctx: click.Context, fmt: str, output_dir: str, splits: tuple[str, ...], data_dir: Optional[str],
              annotations: Optional[str], images_dir: Optional[str], only_classes: Optional[str],
              class_examples: Optional[int], limit_examples: Optional[int], overwrite: bool, skip_bad: bool,
              num_shards: Optional[int], shard_size: Optional[int], workers: int) -> None:
    """Convert VOC, COCO or CSV annotations into sharded TFRecords.

    Images are validated by decoding and stored with their original bytes. Boxes sticking out
    of the image are clipped, empty ones dropped; both are counted in <split>-summary.json.
    """
    from detkit.datasets.readers import Source
    from detkit.datasets.transform import TransformOptions, transform as run

    _shards(num_shards, shard_size)
    _quiet_tf_unless_verbose(ctx)
    opts = TransformOptions(
        fmt=fmt, output_dir=output_dir, splits=list(splits),
        source=Source(data_dir=data_dir, annotations=annotations, images_dir=images_dir),
        only_classes=[c.strip() for c in only_classes.split(",")] if only_classes is not None else None,
        class_examples=class_examples, limit_examples=limit_examples, overwrite=overwrite, skip_bad=skip_bad,
        num_shards=num_shards, shard_size=shard_size, workers=workers, show_progress=True,
    )
    summaries = run(opts)
    for split, s in summaries.items():
        click.echo(f"{split}: {s['images']} images ({s['negatives']} negatives), {s['boxes']} boxes, "
                   f"{len(s['shards'])} shard(s) in {output_dir}")
        notes = [f"{len(s['skipped'])} skipped" if s["skipped"] else "",
                 f"{s['clipped_boxes']} boxes clipped" if s["clipped_boxes"] else "",
                 f"{s['dropped_boxes']} boxes dropped" if s["dropped_boxes"] else "",
                 f"{len(s['reencoded'])} images re-encoded" if s["reencoded"] else "",
                 f"{len(s['size_mismatches'])} size mismatches" if s["size_mismatches"] else ""]
        notes = [n for n in notes if n]
        if notes:
            echo_err(f"{split}: {', '.join(notes)}; see {os.path.join(output_dir, split + '-summary.json')}")


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

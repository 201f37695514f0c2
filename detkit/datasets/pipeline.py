"""tf.data input: read TFRecord shards, decode, augment and resize (training), pad-batch.

Training batches are resized here with the model's input transform (`InputTransform.target_hw`, with the random
scale of augmentation), in parallel with the training step; evaluation batches keep each image's own size and
the model resizes them itself.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import tensorflow as tf

from detkit.config.schema import AugmentConfig, DatasetConfig
from detkit.datasets import sampling
from detkit.datasets.classes import read_classes
from detkit.datasets.statistics import split_statistics
from detkit.datasets.tfrecord import find_shards, parse_example
from detkit.errors import DatasetError
from detkit.models.tiles import boxes_in_tile, random_tile
from detkit.models.transform import InputTransform


def read_class_names(dataset_dir: str) -> list[str]:
    """The ordered class names of a `detkit dataset transform` output (label i+1 = names[i])."""
    names = read_classes(dataset_dir)
    if not names:
        raise DatasetError(f"{dataset_dir}: classes.json lists no classes")
    return names


def _random_crop(image: tf.Tensor, boxes: tf.Tensor, min_fraction: float) -> tuple[tf.Tensor, tf.Tensor]:
    """Crop a random window (normalised boxes) that keeps every box centre; boxes are clipped to it."""
    cx = (boxes[:, 0] + boxes[:, 2]) / 2.0
    cy = (boxes[:, 1] + boxes[:, 3]) / 2.0
    has = tf.shape(boxes)[0] > 0
    cx_min = tf.where(has, tf.reduce_min(tf.concat([cx, [1.0]], 0)), 0.5)
    cx_max = tf.where(has, tf.reduce_max(tf.concat([cx, [0.0]], 0)), 0.5)
    cy_min = tf.where(has, tf.reduce_min(tf.concat([cy, [1.0]], 0)), 0.5)
    cy_max = tf.where(has, tf.reduce_max(tf.concat([cy, [0.0]], 0)), 0.5)
    cw = tf.random.uniform([], tf.maximum(min_fraction, cx_max - cx_min), 1.0)
    ch = tf.random.uniform([], tf.maximum(min_fraction, cy_max - cy_min), 1.0)
    x0 = tf.random.uniform([], tf.maximum(0.0, cx_max - cw), tf.maximum(tf.minimum(cx_min, 1.0 - cw), tf.maximum(0.0, cx_max - cw) + 1e-6))
    y0 = tf.random.uniform([], tf.maximum(0.0, cy_max - ch), tf.maximum(tf.minimum(cy_min, 1.0 - ch), tf.maximum(0.0, cy_max - ch) + 1e-6))
    x0 = tf.clip_by_value(x0, 0.0, 1.0 - cw)
    y0 = tf.clip_by_value(y0, 0.0, 1.0 - ch)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    top = tf.cast(tf.round(y0 * shape[0]), tf.int32)
    left = tf.cast(tf.round(x0 * shape[1]), tf.int32)
    height = tf.maximum(tf.cast(tf.round(ch * shape[0]), tf.int32), 1)
    width = tf.maximum(tf.cast(tf.round(cw * shape[1]), tf.int32), 1)
    height = tf.minimum(height, tf.shape(image)[0] - top)
    width = tf.minimum(width, tf.shape(image)[1] - left)
    image = image[top:top + height, left:left + width]
    # Recompute the window from the integer crop so boxes stay pixel-exact.
    x0 = tf.cast(left, tf.float32) / shape[1]
    y0 = tf.cast(top, tf.float32) / shape[0]
    cw = tf.cast(width, tf.float32) / shape[1]
    ch = tf.cast(height, tf.float32) / shape[0]
    boxes = tf.stack([(boxes[:, 0] - x0) / cw, (boxes[:, 1] - y0) / ch,
                      (boxes[:, 2] - x0) / cw, (boxes[:, 3] - y0) / ch], axis=1)
    return image, tf.clip_by_value(boxes, 0.0, 1.0)


def _random_tile(image: tf.Tensor, boxes: tf.Tensor, labels: tf.Tensor, record: dict, size: int,
                 min_visible: float) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, dict]:
    """A random tile of the image at its own resolution, with the boxes (normalised to the tile) that keep
    `min_visible` of their area in it; the per-box flags of `record` filtered alike."""
    hw = tf.shape(image)[:2]
    fhw = tf.cast(hw, tf.float32)
    offset = random_tile(hw, size)
    tile = image[offset[0]:offset[0] + size, offset[1]:offset[1] + size]
    tile_hw = tf.shape(tile)[:2]
    pixel = boxes * tf.stack([fhw[1], fhw[0], fhw[1], fhw[0]])
    inside, keep = boxes_in_tile(pixel, offset, tile_hw, min_visible)
    thw = tf.cast(tile_hw, tf.float32)
    normalised = tf.boolean_mask(inside, keep) / tf.stack([thw[1], thw[0], thw[1], thw[0]])
    extra = {k: tf.boolean_mask(record[k], keep) for k in ("difficult", "is_crowd")}
    return tile, normalised, tf.boolean_mask(labels, keep), extra


def _color_jitter(image: tf.Tensor, aug: AugmentConfig) -> tf.Tensor:
    """Random brightness/contrast/saturation/hue on a 0-255 float image."""
    x = image / 255.0
    if aug.brightness > 0:
        x = tf.image.random_brightness(x, aug.brightness)
    if aug.contrast > 0:
        x = tf.image.random_contrast(x, 1.0 - aug.contrast, 1.0 + aug.contrast)
    if aug.saturation > 0:
        x = tf.image.random_saturation(x, 1.0 - aug.saturation, 1.0 + aug.saturation)
    if aug.hue > 0:
        x = tf.image.random_hue(x, aug.hue)
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0


def prepare(record: dict, cfg: DatasetConfig, transform: Optional[InputTransform] = None,
            training: bool = False) -> dict:
    """Decode one parsed record: the network's input and boxes in its pixels (resized by `transform` when given,
    else the image at its own size)."""
    image = tf.io.decode_image(record["image"], channels=3, expand_animations=False)
    image = tf.cast(image, tf.float32)
    boxes = tf.reshape(tf.cast(record["boxes"], tf.float32), [-1, 4])  # normalised x1, y1, x2, y2
    labels = tf.cast(record["labels"], tf.int32)
    orig_hw = tf.shape(image)[:2]
    aug = cfg.augment
    tiles = cfg.image.tiles
    if training and tiles.size > 0:
        image, boxes, labels, extra = _random_tile(image, boxes, labels, record, tiles.size, tiles.min_visible)
        record = {**record, **extra}
    elif training and aug.crop_probability > 0:
        image, boxes = tf.cond(
            tf.random.uniform([]) < aug.crop_probability,
            lambda: _random_crop(image, boxes, aug.crop_min_fraction),
            lambda: (image, boxes),
        )
    new_hw = tf.shape(image)[:2]
    if transform is not None:
        factor = None
        if training and tuple(aug.scale_range) != (1.0, 1.0):
            factor = tf.random.uniform([], aug.scale_range[0], aug.scale_range[1])
        image, new_hw = transform.resize(image, factor)
    if training and aug.flip_horizontal:
        flip = tf.random.uniform([]) < 0.5
        image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
        boxes = tf.cond(flip, lambda: tf.stack([1.0 - boxes[:, 2], boxes[:, 1], 1.0 - boxes[:, 0], boxes[:, 3]], 1),
                        lambda: boxes)
    if training:
        image = _color_jitter(image, aug)
    fhw = tf.cast(new_hw, tf.float32)
    pixel_boxes = boxes * tf.stack([fhw[1], fhw[0], fhw[1], fhw[0]])
    # Boxes squeezed to nothing by a crop carry no signal; drop them.
    keep = (pixel_boxes[:, 2] - pixel_boxes[:, 0] >= 1.0) & (pixel_boxes[:, 3] - pixel_boxes[:, 1] >= 1.0)
    if not training:
        keep = tf.ones_like(keep)  # evaluation scores every box as annotated
    return {
        "image": image,
        "image_hw": new_hw,
        "original_hw": orig_hw,
        "boxes": tf.boolean_mask(pixel_boxes, keep),
        "labels": tf.boolean_mask(labels, keep),
        "difficult": tf.boolean_mask(tf.cast(record["difficult"], tf.bool), keep),
        "is_crowd": tf.boolean_mask(tf.cast(record["is_crowd"], tf.bool), keep),
        "filename": record["filename"],
    }


_PADDING = {"labels": -1}


def _padded_batch(ds: tf.data.Dataset, batch_size: int, drop_remainder: bool) -> tf.data.Dataset:
    """Batch variable-size images and box lists, padding images with 0 and labels with -1."""
    def pad_value(key: str, dtype: tf.DType) -> tf.Tensor:
        if dtype == tf.string:
            return tf.constant("")
        if dtype == tf.bool:
            return tf.constant(False)
        return tf.constant(_PADDING.get(key, 0), dtype=dtype)

    values = {k: pad_value(k, spec.dtype) for k, spec in ds.element_spec.items()}
    return ds.padded_batch(batch_size, padding_values=values, drop_remainder=drop_remainder)


def raw_records(dataset_dir: str, split: str, num_parallel_calls: int = 2,
                shard: tuple[int, int] = (1, 0)) -> tf.data.Dataset:
    """Parsed (still encoded) records of one split; with shard=(n, i), only input pipeline i of n's part."""
    files = find_shards(dataset_dir, split)
    count, index = shard
    by_file = count > 1 and len(files) >= count
    if by_file:
        # Each worker reads whole files of its own: no worker reads (and throws away) the others' records.
        files = files[index::count]
    ds = tf.data.TFRecordDataset(files, num_parallel_reads=min(len(files), max(1, num_parallel_calls)))
    if count > 1 and not by_file:
        # Fewer files than workers: every worker reads everything and keeps every count-th record.
        ds = ds.shard(count, index)
    return ds.map(parse_example, num_parallel_calls=num_parallel_calls)


def count_records(dataset_dir: str, split: str) -> int:
    """How many examples a split holds (from its summary if present, else by reading)."""
    summary = os.path.join(dataset_dir, f"{split}-summary.json")
    if os.path.isfile(summary):
        try:
            with open(summary, encoding="utf-8") as fh:
                n = json.load(fh).get("images")
            if isinstance(n, int):
                return n
        except (OSError, ValueError):
            pass
    return sum(1 for _ in tf.data.TFRecordDataset(find_shards(dataset_dir, split)))


def training_dataset(cfg: DatasetConfig, transform: InputTransform, batch_size: int, seed: int,
                     shard: tuple[int, int] = (1, 0)) -> tf.data.Dataset:
    """Endless shuffled, augmented batches from dataset.dir/split plus extra_sources, resized by the model's
    `transform` and zero-padded.

    `batch_size` is this input pipeline's batch; `shard` = (number of pipelines, this one's index).
    """
    sources = [(cfg.dir, cfg.split)] + [tuple(s.rsplit(":", 1)) for s in cfg.extra_sources]
    factors = _class_repeat_factors(sources, cfg.repeat_factor_threshold) if cfg.repeat_factor_threshold > 0 else None
    parts = []
    for directory, split in sources:
        ds = raw_records(directory, split, cfg.num_parallel_calls, shard)
        if cfg.cache:
            ds = ds.cache()
        ds = ds.repeat()
        parts.append(ds if factors is None else sampling.repeat_by_factor(ds, factors))
    ds = parts[0] if len(parts) == 1 else tf.data.Dataset.sample_from_datasets(parts, seed=seed)
    if cfg.shuffle_buffer > 0:
        ds = ds.shuffle(cfg.shuffle_buffer, seed=seed)
    ds = ds.map(lambda r: prepare(r, cfg, transform, training=True), num_parallel_calls=cfg.num_parallel_calls)
    ds = _padded_batch(ds, batch_size, drop_remainder=True)
    return ds.prefetch(2)


def _class_repeat_factors(sources: list[tuple[str, str]], threshold: float) -> list[float]:
    """Repeat factor of each class from its image frequency over all training sources (one class map)."""
    stats = [split_statistics(directory, split) for directory, split in sources]
    images = sum(s.num_images for s in stats)
    holding = sum(s.class_image_counts() for s in stats)
    return sampling.class_repeat_factors(holding / max(images, 1), threshold).tolist()


def evaluation_dataset(cfg: DatasetConfig, dataset_dir: str, split: str, batch_size: int = 1,
                       every: int = 1) -> tf.data.Dataset:
    """Un-augmented, ordered, padded batches of a split for evaluation: images at their own size, boxes in their
    pixels (the model resizes its input and maps its detections back); every `every`-th record only, from the
    first (skipped records are not decoded)."""
    ds = raw_records(dataset_dir, split, cfg.num_parallel_calls)
    if every > 1:
        ds = ds.shard(every, 0)
    ds = ds.map(lambda r: prepare(r, cfg), num_parallel_calls=cfg.num_parallel_calls)
    return _padded_batch(ds, batch_size, drop_remainder=False).prefetch(2)

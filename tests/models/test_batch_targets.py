"""Batch size 2: the targets of each image inside a padded batch equal its targets alone.

Hand-made: four 16x16 anchors tiling a 32x32 image; image A has one box exactly on anchor 0, image B two
boxes exactly on anchors 3 and 1. The batch is built by the training pipeline's own padded batching, so
image A's ground truth is padded with an invalid slot (label -1) to B's two boxes.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from detkit.datasets.pipeline import _padded_batch
from detkit.models import rcnn, rpn
from detkit.models.matching import Sampling

ANCHORS = tf.constant([[0, 0, 16, 16], [16, 0, 32, 16], [0, 16, 16, 32], [16, 16, 32, 32]], tf.float32)
IMAGE_A = {"image_hw": [32, 32], "boxes": [[0, 0, 16, 16]], "labels": [1]}
IMAGE_B = {"image_hw": [32, 32], "boxes": [[16, 16, 32, 32], [16, 0, 32, 16]], "labels": [2, 1]}
# Hand-computed: IoU 1 -> foreground (1), IoU 0 -> background (0); B's anchor 1 matches its box 1, anchor 3 box 0.
RPN_EXPECTED = {"A": ([1, 0, 0, 0], [0, 0, 0, 0]), "B": ([0, 1, 0, 1], [0, 1, 0, 0])}


def batch_of(*images: dict) -> dict:
    """The images through the pipeline's padded batching, as tensors."""
    def gen():
        for im in images:
            yield {"image_hw": np.array(im["image_hw"], np.int32), "boxes": np.array(im["boxes"], np.float32),
                   "labels": np.array(im["labels"], np.int32)}

    ds = tf.data.Dataset.from_generator(gen, output_signature={
        "image_hw": tf.TensorSpec([2], tf.int32), "boxes": tf.TensorSpec([None, 4], tf.float32),
        "labels": tf.TensorSpec([None], tf.int32)})
    return next(iter(_padded_batch(ds, len(images), drop_remainder=True)))


def dense_rpn(batch: dict) -> list[tuple[list[int], list[int], np.ndarray]]:
    """Per image: (label, matched gt index, box target) of every anchor, from the sampled slots."""
    # The default RPN sampling: foreground IoU >= 0.7, background < 0.3, 256 anchors, half foreground.
    t = rpn.rpn_targets(ANCHORS, tf.cast(batch["image_hw"], tf.float32), batch["boxes"], batch["labels"] > 0,
                        Sampling(0.7, 0.3, 0.0, 256, 0.5))
    out = []
    for b in range(int(batch["boxes"].shape[0])):
        labels, gts, targets = [None] * 4, [None] * 4, np.zeros((4, 4), np.float32)
        for slot, index in enumerate(t["indices"][b].numpy()):
            if t["labels"][b, slot] >= 0:
                labels[index] = int(t["labels"][b, slot])
                gts[index] = int(t["gt_index"][b, slot])
                targets[index] = t["box_targets"][b, slot].numpy()
        out.append((labels, gts, targets))
    return out


def test_padded_batch_pads_the_ground_truth_of_the_smaller_image():
    batch = batch_of(IMAGE_A, IMAGE_B)
    assert batch["labels"].numpy().tolist() == [[1, -1], [2, 1]]
    assert batch["boxes"].numpy()[0].tolist() == [[0, 0, 16, 16], [0, 0, 0, 0]]


def test_rpn_targets_in_a_batch_of_two_equal_each_image_alone():
    alone = [dense_rpn(batch_of(IMAGE_A))[0], dense_rpn(batch_of(IMAGE_B))[0]]
    together = dense_rpn(batch_of(IMAGE_A, IMAGE_B))
    for name, one, both in zip("AB", alone, together):
        labels, gts = RPN_EXPECTED[name]
        assert one[0] == both[0] == labels, name
        fg = [i for i, label in enumerate(labels) if label == 1]
        assert [one[1][i] for i in fg] == [both[1][i] for i in fg] == [gts[i] for i in fg], name
        np.testing.assert_allclose(one[2], both[2], atol=1e-6)
        np.testing.assert_allclose(both[2][fg], 0.0, atol=1e-6)  # every box sits exactly on its anchor


def rcnn_rows(batch: dict, proposals: list[list[list[float]]]) -> list[list[tuple]]:
    """Per image: sorted (RoI box, class label, box target) of the valid sampled RoIs."""
    size = max(len(p) for p in proposals)
    boxes = tf.constant([p + [[0, 0, 0, 0]] * (size - len(p)) for p in proposals], tf.float32)
    valid = tf.constant([[True] * len(p) + [False] * (size - len(p)) for p in proposals])
    # The default RoI sampling: foreground IoU >= 0.5, 256 RoIs, a quarter foreground; torchvision's box weights.
    t = rcnn.rcnn_targets(boxes, valid, batch["boxes"], batch["labels"], batch["labels"] > 0,
                          Sampling(0.5, 0.5, 0.0, 256, 0.25), (10.0, 10.0, 5.0, 5.0))
    out = []
    for b in range(len(proposals)):
        rows = [(tuple(t["boxes"][b, s].numpy().tolist()), int(t["labels"][b, s]),
                 tuple(np.round(t["box_targets"][b, s].numpy(), 5).tolist()))
                for s in range(int(t["labels"].shape[1])) if t["labels"][b, s] >= 0]
        out.append(sorted(rows))
    return out


def test_rcnn_targets_in_a_batch_of_two_equal_each_image_alone():
    prop_a = [[0, 0, 16, 16], [16, 16, 32, 32]]
    prop_b = [[16, 16, 32, 32], [0, 0, 16, 16], [16, 0, 32, 16]]
    alone = [rcnn_rows(batch_of(IMAGE_A), [prop_a])[0], rcnn_rows(batch_of(IMAGE_B), [prop_b])[0]]
    together = rcnn_rows(batch_of(IMAGE_A, IMAGE_B), [prop_a, prop_b])
    assert alone == together
    zero = (0.0, 0.0, 0.0, 0.0)
    # A: proposal 0 and the added ground-truth box are class 1, proposal 1 is background.
    assert [(box, label) for box, label, _ in together[0]] == [
        ((0.0, 0.0, 16.0, 16.0), 1), ((0.0, 0.0, 16.0, 16.0), 1), ((16.0, 16.0, 32.0, 32.0), 0)]
    # B: both boxes twice (proposal and added ground truth) with their classes 2 and 1; proposal 1 is background.
    assert [(box, label) for box, label, _ in together[1]] == [
        ((0.0, 0.0, 16.0, 16.0), 0), ((16.0, 0.0, 32.0, 16.0), 1), ((16.0, 0.0, 32.0, 16.0), 1),
        ((16.0, 16.0, 32.0, 32.0), 2), ((16.0, 16.0, 32.0, 32.0), 2)]
    assert all(target == zero for rows in together for _, label, target in rows if label > 0)

import numpy as np
import tensorflow as tf

from detkit.models import postprocess, proposals, roi_pooling


def test_roi_pool_matches_manual_crop():
    # Feature value = column index, so a crop's values reveal where it sampled.
    fh, fw, stride = 8, 8, 16
    feat = np.tile(np.arange(fw, dtype=np.float32)[None, :, None], (fh, 1, 1))[None]
    # Pixel box from the centre of cell 2 to the centre of cell 5: (2.5*16, .., 5.5*16).
    roi = tf.constant([[[40.0, 40.0, 88.0, 88.0]]])
    pooled = roi_pooling.roi_pool(tf.constant(feat), roi, stride, crop_size=4, pool_stride=1).numpy()
    np.testing.assert_allclose(pooled[0, 0, :, 0], [2, 3, 4, 5], atol=1e-5)
    maxed = roi_pooling.roi_pool(tf.constant(feat), roi, stride, crop_size=4, pool_stride=2).numpy()
    assert maxed.shape == (1, 2, 2, 1)
    np.testing.assert_allclose(maxed[0, 0, :, 0], [3, 5], atol=1e-5)


def test_class_wise_nms_keeps_overlaps_of_different_classes():
    cfg = postprocess.DetectionSettings(score_threshold=0.3, nms_iou=0.5, max_per_class=10, max_total=10)
    boxes = tf.constant([[[[0.0, 0.0, 10.0, 10.0]] * 2, [[1.0, 1.0, 10.0, 10.0]] * 2,
                          [[50.0, 50.0, 60.0, 60.0]] * 2]])  # [1, 3, 2 classes, 4]
    scores = tf.constant([[[0.9, 0.8], [0.85, 0.1], [0.2, 0.6]]])
    out = postprocess._nms(boxes, scores, cfg)
    n = int(out["num_detections"][0])
    got = sorted(zip(out["labels"].numpy()[0][:n].tolist(), [round(float(s), 2) for s in out["scores"].numpy()[0][:n]]))
    # class 1: 0.9 suppresses 0.85 (IoU 0.81); 0.2 under threshold. class 2: 0.8 and 0.6 (no overlap).
    assert got == [(1, 0.9), (2, 0.6), (2, 0.8)]


def test_proposals_nms_and_top_n():
    anchors = tf.constant([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [30.0, 30.0, 40.0, 40.0]])
    logits = tf.constant([[3.0, 2.0, 1.0]])
    deltas = tf.zeros([1, 3, 4])
    boxes, scores, valid = proposals.generate_proposals([logits], [deltas], [anchors], tf.constant([[50.0, 50.0]]),
                                                        pre_nms_top_n=3, post_nms_top_n=3, nms_iou=0.5)
    assert valid.numpy().tolist() == [[True, True, False]]
    np.testing.assert_allclose(boxes.numpy()[0, :2], [[0, 0, 10, 10], [30, 30, 40, 40]])
    np.testing.assert_allclose(scores.numpy()[0, :2], 1 / (1 + np.exp([-3.0, -1.0])), rtol=1e-5)


def test_one_minimum_box_size_for_proposals_and_detections():
    """Kept: both sides >= the minimum and neither zero; 0 drops only degenerate boxes."""
    from detkit.models import box_ops

    boxes = tf.constant([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 1.0, 3.0]])
    assert box_ops.min_size_mask(boxes, 0.0).numpy().tolist() == [True, False, True]
    assert box_ops.min_size_mask(boxes, 2.0).numpy().tolist() == [True, False, False]
    settings = postprocess.DetectionSettings(0.0, 0.5, 10, 10, min_box_size=2.0)
    rois = boxes[None]
    logits = tf.constant([[[0.0, 5.0]] * 3])
    out = postprocess.detections_from_rcnn(rois, tf.constant([[True] * 3]), logits, tf.zeros([1, 3, 1, 4]),
                                           tf.constant([[10.0, 10.0]]), (10.0, 10.0, 5.0, 5.0), settings)
    assert int(out["num_detections"][0]) == 1
    np.testing.assert_allclose(out["boxes"].numpy()[0, 0], [0, 0, 2, 2], atol=1e-5)

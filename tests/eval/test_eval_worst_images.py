"""The worst photos: ranking by errors, their error lists, and the drawing with a legend."""
import io

import numpy as np
from PIL import Image
from test_eval_confusion import hand_case

from detkit.eval.confusion import confusion_matrix
from detkit.eval.error_types import classify_image
from detkit.eval.matching import match_images
from detkit.eval.records import Detections, GroundTruth
from detkit.eval.worst_images import KIND_COLORS, draw_image, worst_images
from detkit.utils.draw import add_legend


def test_error_list_of_the_hand_made_image():
    gts, dets = hand_case()
    matches = match_images(gts, dets)
    _, counts = confusion_matrix(matches, 2, threshold=0.4)
    (image,) = worst_images(matches, counts, [classify_image(m) for m in matches], ["a", "b"], 5)
    assert image.index == 0 and image.true_positives == 1
    kinds = [(e["kind"], e["class"], e.get("type"), e.get("detected_as")) for e in image.errors]
    assert kinds == [
        ("false positive", "a", "duplicate", None),
        ("false positive", "a", "classification", None),
        ("false positive", "b", "background", None),
        ("missed", "b", None, "a"),
        ("missed", "a", None, None),
    ]
    assert image.errors[1]["gt_class"] == "b"
    assert [b[0] for b in image.boxes].count("true positive") == 1


def test_ranked_by_number_of_errors_and_photos_without_errors_left_out():
    box = [0.0, 0.0, 10.0, 10.0]
    gts = [GroundTruth(f"{i}:p{i}.jpg", [box], [1], width=20, height=20) for i in range(3)]
    dets = [Detections("0:p0.jpg", [box], [1], [0.9]),  # perfect
            Detections("1:p1.jpg", [[15, 15, 20, 20]], [1], [0.9]),  # a false alarm and a miss
            Detections("2:p2.jpg", [[15, 15, 20, 20], [12, 0, 20, 8]], [1, 1], [0.9, 0.8])]  # 3 errors
    matches = match_images(gts, dets)
    _, counts = confusion_matrix(matches, 1, threshold=0.5)
    ranked = worst_images(matches, counts, [classify_image(m) for m in matches], ["a"], 5)
    assert [(w.index, len(w.errors)) for w in ranked] == [(2, 3), (1, 2)]
    assert len(worst_images(matches, counts, [classify_image(m) for m in matches], ["a"], 1)) == 1


def test_drawing_has_the_three_colours_and_a_legend_strip():
    gts = [GroundTruth("0:p.jpg", [[10, 10, 60, 60], [100, 10, 150, 60]], [1, 1], width=200, height=100)]
    dets = [Detections("0:p.jpg", [[10, 10, 60, 60], [120, 70, 190, 95]], [1, 1], [0.9, 0.8])]
    matches = match_images(gts, dets)
    _, counts = confusion_matrix(matches, 1, threshold=0.5)
    (image,) = worst_images(matches, counts, [classify_image(m) for m in matches], ["a"], 1)
    buffer = io.BytesIO()
    Image.new("RGB", (200, 100), (128, 128, 128)).save(buffer, format="PNG")
    drawn = np.asarray(draw_image(buffer.getvalue(), image))
    assert drawn.shape[1] == 200 and drawn.shape[0] > 100  # the legend strip below the photo
    colours = {tuple(p) for p in drawn.reshape(-1, 3)}
    assert all(tuple(c) in colours for c in KIND_COLORS.values())
    photo = Image.new("RGB", (40, 30))
    assert add_legend(photo, [("x", (255, 0, 0))]).size[1] > 30

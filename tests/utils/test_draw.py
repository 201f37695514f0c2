"""Box/label drawing and the thumbnail grid, checked pixel by pixel on synthetic images."""
import numpy as np
import pytest
from PIL import Image

from detkit.utils.draw import (
    GT_COLORS,
    OUTLINE,
    PALETTE,
    color_for,
    color_for_name,
    draw_detections,
    draw_ground_truth_and_detections,
    line_width_for,
    make_grid,
    place_label,
    text_color_for,
)

GREY = (128, 128, 128)


def grey(size=(200, 200)):
    return Image.new("RGB", size, GREY)


def px(img, x, y):
    return tuple(np.asarray(img)[y, x])


def test_box_edges_have_the_box_colour_with_a_dark_outline():
    img = grey()
    out = draw_detections(img, [[50, 50, 150, 150]], ["raccoon"], [0.97], color_key=[1])
    color, width = color_for(1), line_width_for(img.size)
    assert out is not img and out.mode == "RGB"
    assert np.all(np.asarray(img) == GREY)  # input untouched
    for x, y in [(50, 100), (149, 100), (100, 149), (50 + width - 1, 100)]:
        assert px(out, x, y) == color, (x, y)
    assert px(out, 49, 100) == OUTLINE  # dark outside the line
    assert px(out, 50 + width, 100) == OUTLINE  # and inside it
    assert px(out, 100, 100) == GREY  # the box interior is left alone
    assert px(out, 10, 180) == GREY


def test_drawn_image_differs_from_input_along_the_box():
    img = grey()
    out = np.asarray(draw_detections(img, [[50, 50, 150, 150]], ["raccoon"], None))
    changed = np.any(out != np.asarray(img), axis=2)
    # Outline band: one dark pixel outside the box (49 and 150), the coloured line, one dark pixel inside.
    band = line_width_for(img.size) + 2
    ring = np.zeros_like(changed)
    ring[49:151, 49:151] = True
    ring[49 + band:151 - band, 49 + band:151 - band] = False
    assert changed[ring].all()
    assert not (changed & ~ring)[50:].any()  # outside the outline only the label (above the box) changes


def test_label_is_drawn_on_a_box_coloured_rectangle():
    out = draw_detections(grey(), [[50, 80, 150, 150]], ["raccoon"], [0.97], color_key=[3])
    region = np.asarray(out)[40:79, 50:150]
    assert np.count_nonzero(np.all(region == color_for(3), axis=2)) > 100
    assert np.count_nonzero(np.all(region == text_color_for(color_for(3)), axis=2)) > 10  # the text


def label_extent(box, size=(200, 200)):
    """Width and height of the region the label changes (drawn with vs without label text)."""
    def draw(labels, scores):
        return np.asarray(draw_detections(grey(size), [box], labels, scores, color_key=[4]))
    ys, xs = np.nonzero(np.any(draw(["a_long_label_name"], [0.99]) != draw([""], None), axis=2))
    return xs.max() - xs.min() + 1, ys.max() - ys.min() + 1


@pytest.mark.parametrize(
    "box", [[0, 0, 60, 40], [150, 0, 200, 30], [180, 170, 200, 200], [-30, -30, 230, 230]]
)
def test_label_stays_inside_the_image_for_boxes_at_the_edge(box):
    size = (200, 200)
    x0, y0, x1, y1 = place_label(box, (90, 18), size)
    assert 0 <= x0 <= x1 < size[0] and 0 <= y0 <= y1 < size[1]
    assert (x1 - x0 + 1, y1 - y0 + 1) == (90, 18)
    # Rendered: the label is as large as one drawn in the middle of the image, so none of it is clipped.
    assert label_extent(box) == label_extent([60, 100, 140, 190])


def test_label_goes_above_the_box_when_there_is_room_and_inside_otherwise():
    assert place_label([50, 100, 150, 150], (40, 20), (200, 200)) == (50, 80, 89, 99)
    assert place_label([50, 5, 150, 150], (40, 20), (200, 200)) == (50, 5, 89, 24)
    assert place_label([190, 100, 200, 150], (40, 20), (200, 200))[2] == 199  # pushed left, not cut off


def test_text_colour_follows_luminance():
    assert text_color_for((255, 225, 25)) == (0, 0, 0)  # yellow
    assert text_color_for((255, 255, 255)) == (0, 0, 0)
    assert text_color_for((0, 0, 117)) == (255, 255, 255)  # navy
    assert text_color_for((145, 30, 180)) == (255, 255, 255)  # purple


def test_palette_by_class_id_and_by_name():
    assert len(PALETTE) == 20 and len(set(PALETTE)) == 20
    assert color_for(1) == PALETTE[0] and color_for(21) == PALETTE[0] and color_for(2) != color_for(1)
    assert color_for_name("raccoon") == color_for_name("raccoon") in PALETTE


def test_accepts_other_modes_and_no_boxes():
    img = Image.new("L", (64, 48), 200)
    out = draw_detections(img, np.zeros((0, 4)), [], None)
    assert out.mode == "RGB" and out.size == (64, 48)
    assert np.all(np.asarray(out) == 200)
    rgba = Image.new("RGBA", (64, 48), (0, 0, 0, 0))
    assert draw_detections(rgba, [[5, 5, 40, 40]], ["x"], [0.5]).mode == "RGB"


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError, match="scores"):
        draw_detections(grey(), [[0, 0, 10, 10]], ["a"], [0.1, 0.2])


def test_ground_truth_is_dashed_white_and_green():
    img = grey()
    out = draw_ground_truth_and_detections(img, [[20, 20, 180, 180]], [[60, 60, 120, 120]], ["dog"], [0.8])
    top_edge = [px(out, x, 20) for x in range(24, 176)]
    assert GT_COLORS[0] in top_edge and GT_COLORS[1] in top_edge
    assert set(top_edge) <= set(GT_COLORS)
    assert px(out, 19, 100) == OUTLINE
    assert px(out, 60, 100) == color_for_name("dog")  # detection drawn too


def test_grid_size_and_letterboxing():
    images = [Image.new("RGB", (300, 100), (255, 0, 0)), Image.new("RGB", (50, 200), (0, 0, 255))]
    images += [Image.new("RGB", (64, 64), (0, 255, 0))] * 3
    grid = make_grid(images, columns=3, cell_size=64)
    assert grid.size == (3 * 64, 2 * 64)
    # The wide image is letterboxed: red across the middle row of its cell, background above and below.
    assert px(grid, 32, 32) == (255, 0, 0)
    assert px(grid, 32, 2) != (255, 0, 0)
    # The tall one is pillarboxed.
    assert px(grid, 64 + 32, 32) == (0, 0, 255)
    assert px(grid, 64 + 2, 32) != (0, 0, 255)
    # Last row has two images and one empty cell.
    assert px(grid, 2 * 64 + 32, 64 + 32) != (0, 255, 0)


def test_grid_with_fewer_images_than_columns():
    assert make_grid([grey((10, 10))], columns=4, cell_size=32).size == (32, 32)
    with pytest.raises(ValueError):
        make_grid([], columns=2, cell_size=32)

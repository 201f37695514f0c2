"""detkit.inputs: expanding PATH arguments, reading upright RGB images, reading and writing videos."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from detkit import inputs


def _photo(path, size=(64, 40), mode="RGB", fmt=None, exif_orientation=None):
    """A small gradient image with an asymmetric mark, so rotations are visible."""
    w, h = size
    grad = (np.add.outer(np.arange(h) * 3, np.arange(w)) % 256).astype(np.uint8)
    rgb = np.stack([grad, 255 - grad, np.full_like(grad, 40)], axis=-1)
    rgb[:5, :9] = (255, 0, 0)  # top-left mark
    image = Image.fromarray(rgb, "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    kwargs = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    image.save(path, fmt, **kwargs)
    return path


def test_expand_files_folders_globs_and_missing(tmp_path):
    a = _photo(str(tmp_path / "imgs" / "a.jpg"))
    b = _photo(str(tmp_path / "imgs" / "sub" / "b.png"))
    _photo(str(tmp_path / "imgs" / ".hidden.jpg"))
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    c = _photo(str(tmp_path / "other" / "c.jpeg"))

    found = inputs.expand_paths([str(tmp_path / "imgs")])
    assert [i.path for i in found.items] == [a, b]
    assert [i.relpath for i in found.items] == ["a.jpg", os.path.join("sub", "b.png")]
    assert all(i.kind == "image" for i in found.items)

    found = inputs.expand_paths([str(tmp_path / "**" / "*.jp*g"), a, str(tmp_path / "nope.jpg"),
                                 str(tmp_path / "none-*.jpg")])
    assert sorted(i.path for i in found.items) == sorted([a, c])  # a only once
    assert found.missing == [str(tmp_path / "nope.jpg"), str(tmp_path / "none-*.jpg")]

    (tmp_path / "clip.MP4").write_bytes(b"")
    found = inputs.expand_paths([str(tmp_path / "clip.MP4"), str(tmp_path / "imgs" / "notes.txt")])
    assert [i.kind for i in found.items] == ["video", "image"]  # explicit files are kept, to be reported


def test_exif_orientation_6_gives_the_upright_image(tmp_path):
    stored = _photo(str(tmp_path / "rot.jpg"), size=(64, 40), fmt="JPEG", exif_orientation=6)
    with Image.open(stored) as im:
        assert im.size == (64, 40)
        raw = np.asarray(im.convert("RGB"))
    upright = inputs.read_image_array(stored)
    assert upright.shape == (64, 40, 3)  # width and height swapped
    # Orientation 6 = the camera was turned 90 degrees clockwise: the viewer rotates the pixels clockwise.
    np.testing.assert_array_equal(upright, np.rot90(raw, k=-1))


@pytest.mark.parametrize("mode,fmt", [("RGBA", "PNG"), ("L", "PNG"), ("P", "PNG"), ("LA", "PNG"),
                                      ("I;16", "PNG"), ("CMYK", "JPEG"), ("RGB", "BMP"), ("RGB", "GIF")])
def test_any_mode_becomes_rgb_uint8(tmp_path, mode, fmt):
    path = _photo(str(tmp_path / f"im.{fmt.lower()}"), size=(30, 20), mode=mode, fmt=fmt)
    array = inputs.read_image_array(path)
    assert array.dtype == np.uint8 and array.shape == (20, 30, 3)


def test_unreadable_images_name_the_file(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    truncated = tmp_path / "cut.jpg"
    _photo(str(tmp_path / "full.jpg"), size=(200, 150), fmt="JPEG")
    truncated.write_bytes((tmp_path / "full.jpg").read_bytes()[:400])
    for path in (bad, truncated, tmp_path / "missing.jpg"):
        with pytest.raises(inputs.UnreadableInput, match=str(path.name)):
            inputs.read_image(str(path))


def test_video_write_and_read_back(tmp_path):
    path = str(tmp_path / "clip.mp4")
    with inputs.VideoWriter(path, fps=5) as writer:
        for i in range(5):
            writer.write(np.full((33, 47, 3), 40 * i, np.uint8))  # odd sides are padded, not resized
    with inputs.VideoReader(path) as reader:
        frames = list(reader)
        assert reader.info.fps == pytest.approx(5.0)
    assert [f[0] for f in frames] == [0, 1, 2, 3, 4]
    assert [f[1] for f in frames] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert frames[0][2].shape == (34, 48, 3)
    assert [int(round(f[2].mean() / 40)) for f in frames] == [0, 1, 2, 3, 4]


def test_unreadable_video(tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(inputs.UnreadableInput, match="broken.mp4"):
        with inputs.VideoReader(str(path)) as reader:
            list(reader)

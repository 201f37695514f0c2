"""Image bytes to upright pixels in the TensorFlow graph (the SavedModel's input): JPEG/PNG/GIF/BMP decoding and
the JPEG's EXIF orientation applied as Pillow's exif_transpose does, so that an exported model sees what
`detkit predict` (which decodes with Pillow) sees.
"""
from __future__ import annotations

import tensorflow as tf

# Bounds of the in-graph EXIF scan: JPEG segments before the image data, and IFD0 entries.
_MAX_SEGMENTS = 64
_MAX_IFD_ENTRIES = 256


def decode_image(image_bytes: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP bytes as upright uint8 RGB [H, W, 3], EXIF orientation applied as Pillow does."""
    # INTEGER_ACCURATE is libjpeg's default and Pillow's: the pixels equal those `detkit predict` reads.
    image = tf.cond(
        tf.io.is_jpeg(image_bytes),
        lambda: tf.io.decode_jpeg(image_bytes, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(image_bytes, channels=3, expand_animations=False),
    )
    image = apply_orientation(image, exif_orientation(image_bytes))
    image.set_shape([None, None, 3])
    return image


def _u16(data: tf.Tensor, pos: tf.Tensor, little: tf.Tensor) -> tf.Tensor:
    """Unsigned 16-bit int at `pos` of a uint8 vector padded with two trailing zeros (0 outside the data)."""
    n = tf.size(data) - 2
    a = tf.cast(tf.gather(data, tf.clip_by_value(pos, 0, n + 1)), tf.int32)
    b = tf.cast(tf.gather(data, tf.clip_by_value(pos + 1, 0, n + 1)), tf.int32)
    value = tf.where(little, a + 256 * b, 256 * a + b)
    return tf.where((pos >= 0) & (pos + 1 < n), value, 0)


def _u32(data: tf.Tensor, pos: tf.Tensor, little: tf.Tensor) -> tf.Tensor:
    lo = _u16(data, pos, little)
    hi = _u16(data, pos + 2, little)
    return tf.where(little, lo + 65536 * hi, 65536 * lo + hi)


def exif_orientation(image_bytes: tf.Tensor) -> tf.Tensor:
    """The EXIF orientation tag (1-8) of a JPEG's APP1 segment; 1 when absent or not a JPEG."""
    raw = tf.io.decode_raw(image_bytes, tf.uint8)
    n = tf.size(raw)
    data = tf.concat([raw, tf.zeros([2], tf.uint8)], 0)
    big = tf.constant(False)
    is_jpeg = (n > 4) & (_u16(data, tf.constant(0), big) == 0xFFD8)

    # Walk the JPEG segments (FF xx LLLL ...) up to start-of-scan, looking for "Exif\0\0" in APP1.
    def seg_cond(i, pos, tiff):
        return (i < _MAX_SEGMENTS) & (tiff < 0) & (pos + 4 <= n)

    def seg_body(i, pos, tiff):
        marker = _u16(data, pos, big)
        length = _u16(data, pos + 2, big)
        valid = (marker >= 0xFF01) & (marker != 0xFFDA) & (marker != 0xFFD9) & (length >= 2)
        header = tf.strings.substr(image_bytes, tf.minimum(pos + 4, n), 6)
        found = valid & (marker == 0xFFE1) & tf.equal(header, b"Exif\x00\x00")
        tiff = tf.where(found, pos + 10, tiff)
        next_pos = tf.where(valid, pos + 2 + length, n)  # anything unexpected ends the walk
        return i + 1, next_pos, tiff

    _, _, tiff = tf.while_loop(seg_cond, seg_body, (tf.constant(0), tf.constant(2), tf.constant(-1)))
    tiff = tf.where(is_jpeg, tiff, -1)
    order = _u16(data, tiff, big)
    little = tf.equal(order, 0x4949)  # "II"
    valid_tiff = (tiff >= 0) & (little | tf.equal(order, 0x4D4D))
    ifd = tiff + _u32(data, tiff + 4, little)
    count = tf.minimum(_u16(data, ifd, little), _MAX_IFD_ENTRIES)

    def ifd_cond(i, value):
        return (i < count) & (value == 0)

    def ifd_body(i, value):
        entry = ifd + 2 + 12 * i
        is_orientation = tf.equal(_u16(data, entry, little), 0x0112)
        return i + 1, tf.where(is_orientation, _u16(data, entry + 8, little), value)

    _, value = tf.while_loop(ifd_cond, ifd_body, (tf.constant(0), tf.constant(0)))
    value = tf.where(valid_tiff & (ifd + 2 <= n), value, 1)
    return tf.where((value >= 1) & (value <= 8), value, 1)


def apply_orientation(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """Turn stored pixels [H, W, C] upright, as PIL.ImageOps.exif_transpose does."""
    branches = [
        lambda: image,                                            # 1 (and 0: unused)
        lambda: image,                                            # 1
        lambda: tf.reverse(image, [1]),                           # 2 mirror horizontal
        lambda: tf.reverse(image, [0, 1]),                        # 3 rotate 180
        lambda: tf.reverse(image, [0]),                           # 4 mirror vertical
        lambda: tf.transpose(image, [1, 0, 2]),                   # 5 transpose
        lambda: tf.reverse(tf.transpose(image, [1, 0, 2]), [1]),  # 6 rotate 90 clockwise
        lambda: tf.reverse(tf.transpose(image, [1, 0, 2]), [0, 1]),  # 7 transverse
        lambda: tf.reverse(tf.transpose(image, [1, 0, 2]), [0]),  # 8 rotate 90 counter-clockwise
    ]
    return tf.switch_case(tf.cast(orientation, tf.int32), branches)

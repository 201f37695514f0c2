"""Turn PATH arguments into images and videos, and read them: upright RGB pixels and video frames.

No TensorFlow here: `detkit predict` expands its arguments and reports bad paths before loading a model.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

import numpy as np
from PIL import Image, ImageOps

from detkit.errors import DatasetError

# Lazy imports: imageio and its ffmpeg plugin are optional (video input only) and loaded when a video is read.

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
_GLOB_CHARS = set("*?[")


class UnreadableInput(DatasetError):
    """An image or video that cannot be decoded; the message names the file and the reason."""


@dataclass(frozen=True)
class InputItem:
    """One file to predict on. `relpath` is its name relative to the folder or glob it came from."""

    path: str
    kind: str  # "image" or "video"
    relpath: str


@dataclass
class Expansion:
    """The files found for a list of PATH arguments, and the arguments that matched nothing."""

    items: list[InputItem]
    missing: list[str]


def kind_of(path: str) -> Optional[str]:
    """"image", "video" or None, from the file extension."""
    ext = os.path.splitext(path)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    return None


def _walk(folder: str) -> list[str]:
    """Image and video files under `folder`, recursively, in a stable (sorted) order; hidden ones skipped."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and kind_of(name):
                found.append(os.path.join(root, name))
    return found


def expand_paths(paths: Iterable[str]) -> Expansion:
    """Expand files, folders (recursively) and globs (`**` allowed) into image/video items, in order.

    A file given explicitly is kept whatever its extension (it is treated as an image unless its
    extension is a video one), so an unreadable file is reported by the reader rather than dropped.
    Duplicates are removed; arguments that match nothing are returned in `missing`.
    """
    items: list[InputItem] = []
    missing: list[str] = []
    seen: set[str] = set()

    def add(path: str, relpath: str, kind: Optional[str]) -> None:
        key = os.path.realpath(path)
        if key in seen:
            return
        seen.add(key)
        items.append(InputItem(path=path, kind=kind or "image", relpath=relpath))

    for arg in paths:
        if os.path.isdir(arg):
            files = _walk(arg)
            for path in files:
                add(path, os.path.relpath(path, arg), kind_of(path))
            if not files:
                missing.append(arg)
        elif os.path.isfile(arg):
            add(arg, os.path.basename(arg), kind_of(arg))
        elif _GLOB_CHARS & set(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            base = _glob_base(arg)
            count = 0
            for match in matches:
                if os.path.isdir(match):
                    for path in _walk(match):
                        add(path, os.path.relpath(path, base), kind_of(path))
                        count += 1
                elif kind_of(match):
                    add(match, os.path.relpath(match, base), kind_of(match))
                    count += 1
            if not count:
                missing.append(arg)
        else:
            missing.append(arg)
    return Expansion(items=items, missing=missing)


def _glob_base(pattern: str) -> str:
    """The directory part of a glob before its first wildcard."""
    parts = pattern.split(os.sep)
    fixed = []
    for part in parts[:-1]:
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    base = os.sep.join(fixed)
    return base or ("/" if pattern.startswith(os.sep) else ".")


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright RGB: EXIF orientation applied; grey, palette and 16-bit images converted, alpha dropped.

    Alpha is dropped rather than composited, as TensorFlow's decoders (training pipeline, SavedModel) do.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if array.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(array * (255.0 / top), 0, 255).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def read_image(path: str) -> Image.Image:
    """The upright RGB Pillow image of `path`, fully decoded; UnreadableInput with the reason otherwise."""
    try:
        with Image.open(path) as im:
            im.load()
            return to_rgb(im)
    except FileNotFoundError:
        raise UnreadableInput(f"{path}: cannot read image: file not found") from None
    except Image.UnidentifiedImageError:
        empty = os.path.isfile(path) and os.path.getsize(path) == 0
        reason = "empty file" if empty else "not an image file Pillow can decode"
        raise UnreadableInput(f"{path}: cannot read image: {reason}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnreadableInput(f"{path}: cannot read image: {reason}") from None


def read_image_array(path: str) -> np.ndarray:
    """`read_image` as a uint8 [H, W, 3] array."""
    return np.asarray(read_image(path), dtype=np.uint8)


# ---------------------------------------------------------------- video
def _imageio():
    try:
        import imageio.v2 as imageio  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        raise DatasetError(
            "video input needs imageio with its ffmpeg plugin: pip install 'imageio[ffmpeg]'"
        ) from None
    return imageio


@dataclass
class VideoInfo:
    """Frame rate, estimated frame count and frame size of a video."""

    fps: float
    num_frames: Optional[int]
    size: tuple[int, int]  # width, height


class VideoReader:
    """Iterate over a video's RGB frames as (index, time in seconds, uint8 [H, W, 3]); use as a context manager."""

    def __init__(self, path: str):
        imageio = _imageio()
        self.path = path
        try:
            self._reader = imageio.get_reader(path, format="FFMPEG")
            meta = self._reader.get_meta_data()
        except Exception as exc:  # imageio raises OSError, RuntimeError, IndexError... on broken files
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise UnreadableInput(f"{path}: cannot read video: {reason}") from None
        fps = float(meta.get("fps") or 0.0) or 25.0
        duration = meta.get("duration")
        frames = None
        if isinstance(duration, (int, float)) and np.isfinite(duration) and duration > 0:
            frames = max(1, int(round(duration * fps)))
        size = tuple(int(v) for v in meta.get("size", (0, 0)))
        self.info = VideoInfo(fps=fps, num_frames=frames, size=size)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[int, float, np.ndarray]]:
        index = 0
        try:
            for frame in self._reader:
                yield index, index / self.info.fps, np.asarray(frame, dtype=np.uint8)[..., :3]
                index += 1
        except Exception as exc:
            if index == 0:
                reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                raise UnreadableInput(f"{self.path}: cannot read video: {reason}") from None
            # A truncated file: keep the frames that decoded.

    def close(self) -> None:
        try:
            self._reader.close()
        except Exception:  # pragma: no cover - closing a broken reader
            pass

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoWriter:
    """Write RGB frames to a video file (H.264 for .mp4/.mov/.mkv/.avi, VP9 for .webm) at `fps`."""

    def __init__(self, path: str, fps: float):
        imageio = _imageio()
        ext = os.path.splitext(path)[1].lower()
        codec = "libvpx-vp9" if ext == ".webm" else "libx264"
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        # yuv420p needs even sides: write() pads odd frames by one edge pixel instead of resizing them.
        self._writer = imageio.get_writer(path, format="FFMPEG", fps=fps, codec=codec, quality=7,
                                          macro_block_size=1, ffmpeg_log_level="error")

    def write(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame, dtype=np.uint8)
        pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
        if pad_h or pad_w:
            frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        self._writer.append_data(frame)

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

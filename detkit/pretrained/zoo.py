"""The model zoo: torchvision's published COCO Faster R-CNNs, downloaded once and kept as detkit runs.

The cache is `$DETKIT_HOME` or `~/.cache/detkit`; model NAME lives in `<cache>/models/NAME/`, an ordinary
run directory (`--checkpoint` takes it like any other). A download goes to `<cache>/downloads/`, is checked
against the SHA-256 prefix in its file name (torchvision's convention, as `torch.hub` checks it), imported,
then removed.
"""
from __future__ import annotations

import os
import re
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable, Optional

from detkit.errors import CheckpointError, DetkitError
from detkit.runs import latest_checkpoint, layout
from detkit.utils import atomic
from detkit.utils.digest import sha256_of
from detkit.utils.progress import progress

# Lazy imports: `detkit checkpoint list` reads the zoo without TensorFlow; only a download imports the importer.

HOME_VARIABLE = "DETKIT_HOME"
TIMEOUT_SECONDS = 30.0
CHUNK_BYTES = 1 << 20
_HASH_RE = re.compile(r"-([a-f0-9]{6,})\.")


@dataclass(frozen=True)
class ZooModel:
    """One downloadable detector."""

    name: str
    arch: str
    url: str
    coco_ap: float  # COCO val2017 box AP as torchvision reports it
    about: str

    @property
    def filename(self) -> str:
        """The file name of the published weights."""
        return self.url.rsplit("/", 1)[-1]


MODELS: dict[str, ZooModel] = {m.name: m for m in (
    ZooModel("accurate", "fasterrcnn_resnet50_fpn",
             "https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_coco-258fb6c6.pth", 37.0,
             "ResNet-50 FPN, 800-1333 px, 160 MB"),
    ZooModel("mobile", "fasterrcnn_mobilenet_v3_large_fpn",
             "https://download.pytorch.org/models/fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth", 32.8,
             "MobileNetV3-Large FPN, 800-1333 px, 75 MB"),
    ZooModel("fast", "fasterrcnn_mobilenet_v3_large_320_fpn",
             "https://download.pytorch.org/models/fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth", 22.8,
             "MobileNetV3-Large FPN, 320-640 px, 75 MB"),
)}
# With no --checkpoint and no -c, predict and server use the most accurate model that is downloaded.
DEFAULT_ORDER = ("accurate", "mobile", "fast")
# `detkit train --dataset-dir` fine-tunes the downloaded model that trains fastest on a CPU.
FINETUNE_ORDER = ("fast", "mobile", "accurate")


def cache_dir() -> str:
    """$DETKIT_HOME, else ~/.cache/detkit."""
    return os.environ.get(HOME_VARIABLE) or os.path.join(os.path.expanduser("~"), ".cache", "detkit")


def model_dir(name: str) -> str:
    """Where model NAME is (or would be) kept."""
    return os.path.join(cache_dir(), "models", name)


def get_model(name: str) -> ZooModel:
    """The registry entry of NAME, or an error listing the names."""
    if name not in MODELS:
        raise DetkitError(f"unknown model {name!r} (choose from {', '.join(MODELS)})")
    return MODELS[name]


def is_downloaded(name: str) -> bool:
    """Whether model NAME is in the cache with a complete checkpoint."""
    directory = model_dir(name)
    return (os.path.isfile(os.path.join(directory, layout.IMPORT_RECORD_FILE))
            and latest_checkpoint(directory) is not None)


def downloaded() -> list[ZooModel]:
    """The registry's models that are in the cache, in registry order."""
    return [m for m in MODELS.values() if is_downloaded(m.name)]


def default_model() -> tuple[str, str]:
    """(name, run dir) of the model used when none is given; an error naming the download command if none is."""
    for name in DEFAULT_ORDER:
        if is_downloaded(name):
            return name, model_dir(name)
    raise CheckpointError("no checkpoint given and no downloaded model: `detkit checkpoint download accurate` (or "
                          "fast) gets a COCO detector; or pass --checkpoint RUN_DIR or -c config.yml of a run "
                          "trained with `detkit train -c config.yml`")


def model_to_finetune() -> Optional[tuple[str, str]]:
    """(name, run dir) of the downloaded model `train --dataset-dir` starts from (the fastest to train), or None."""
    for name in FINETUNE_ORDER:
        if is_downloaded(name):
            return name, model_dir(name)
    return None


def expected_hash_prefix(url: str) -> Optional[str]:
    """The SHA-256 prefix in a `name-<hash>.ext` file name, as torch.hub reads it, or None."""
    match = _HASH_RE.search(url.rsplit("/", 1)[-1])
    return match.group(1) if match else None


def manual_command(model: ZooModel, filename: Optional[str] = None) -> str:
    """The command that finishes a download fetched by hand."""
    return (f"detkit checkpoint import {filename or model.filename} --output {model_dir(model.name)} "
            f"--arch {model.arch} --classes coco")


def _torch_hub_copy(filename: str) -> str:
    """Where torch.hub keeps a downloaded file of this name ($TORCH_HOME, default ~/.cache/torch)."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "torch")
    return os.path.join(torch_home, "hub", "checkpoints", filename)


def fetch(url: str, destination: str, show_progress: bool = True, timeout: Optional[float] = None) -> None:
    """Download `url` to `destination` (written atomically) with a progress bar; check the name's hash prefix."""
    expected = expected_hash_prefix(url)
    with atomic.atomic_path(destination) as tmp:
        with urllib.request.urlopen(url, timeout=timeout or TIMEOUT_SECONDS) as response, open(tmp, "wb") as out:
            total = response.headers.get("Content-Length")
            bar = progress(total=int(total) if total and total.isdigit() else None, desc="download", unit="B",
                           unit_scale=True, disable=not show_progress)
            with bar:
                for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        if expected and not sha256_of(tmp).startswith(expected):
            raise CheckpointError(f"{url}: the downloaded file's SHA-256 does not start with {expected} (a damaged "
                                  "or different file); nothing was kept, try again")


def download(name: str, show_progress: bool = True, url: Optional[str] = None,
             log: Callable[[str], None] = lambda message: None) -> str:
    """Fetch model NAME (from `url` if given), import it into the cache and return its run dir.

    A model already downloaded is returned as is. Without a connection, the error is one line naming the
    URL to fetch by hand and the `detkit checkpoint import` command that finishes the job.
    """
    # Imported here: the importer builds models (TensorFlow), and `detkit checkpoint list` reads the zoo without it.
    from detkit.pretrained.importer import import_checkpoint

    model = get_model(name)
    target = model_dir(name)
    if is_downloaded(name):
        log(f"{name} is already downloaded: {target}")
        return target
    url = url or model.url
    downloads = os.path.join(cache_dir(), "downloads")
    atomic.remove_stale_temp_files(downloads)  # partial downloads of killed runs
    path = os.path.join(downloads, url.rsplit("/", 1)[-1])
    expected = expected_hash_prefix(url)
    # A file left by a download whose import failed, or torch.hub's copy, saves fetching it again.
    candidates = (path, _torch_hub_copy(os.path.basename(path)))
    source = next((p for p in candidates
                   if os.path.isfile(p) and (not expected or sha256_of(p).startswith(expected))), None)
    if source is None:
        log(f"downloading {name} ({model.arch}, COCO AP {model.coco_ap}) from {url}")
        try:
            fetch(url, path, show_progress)
        except (urllib.error.URLError, socket.timeout, ConnectionError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise DetkitError(f"cannot download {url} ({reason}); fetch it by hand, then run: "
                              f"{manual_command(model, os.path.basename(path))}") from None
        except OSError as exc:
            raise DetkitError(f"{path}: cannot write the download ({exc.strerror or exc})") from None
        source = path
    else:
        log(f"using {source}")
    log(f"importing {os.path.basename(source)} into {target}")
    import_checkpoint(source, target, arch=model.arch, classes="coco", overwrite=True)
    if source == path:
        os.remove(path)
        if not os.listdir(downloads):
            os.rmdir(downloads)
    return target

"""Model directories `detkit checkpoint export --format openvino` writes, recognised wherever a run is accepted.

Such a directory holds the model in the runtime's own files, the run's config.yml and classes.json, and
export.json (its manifest: "format", the checkpoint and step it came from, ...).
"""
from __future__ import annotations

import json
import os
from typing import Optional

from detkit.errors import CheckpointError

MANIFEST_FILE = "export.json"
# Formats an inference runtime other than TensorFlow runs (a SavedModel keeps its manifest under assets/).
RUNTIME_FORMATS = ("openvino",)


def exported_model(path: str) -> Optional[dict]:
    """The manifest of a model directory exported for an inference runtime, or None if `path` is not one."""
    manifest = os.path.join(path, MANIFEST_FILE)
    if not os.path.isfile(manifest):
        return None
    try:
        with open(manifest, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{manifest}: cannot read the export's manifest ({exc})") from None
    return data if isinstance(data, dict) and data.get("format") in RUNTIME_FORMATS else None

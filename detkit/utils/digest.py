"""File digests: the SHA-256 that downloads are checked against and imports record."""
from __future__ import annotations

import hashlib


def sha256_of(path: str) -> str:
    """The hex SHA-256 of a file, read in 1 MB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

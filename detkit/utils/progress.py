"""Progress bars on stderr with rate and ETA."""
from __future__ import annotations

import sys
from typing import Iterable, Optional

from tqdm import tqdm


def progress(iterable: Optional[Iterable] = None, total: Optional[int] = None, desc: str = "", unit: str = "it",
             disable: bool = False, unit_scale: bool = False) -> tqdm:
    """A tqdm bar on stderr showing count, rate (unit/s) and ETA; unit_scale shows k/M/G (for bytes)."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, unit_scale=unit_scale, file=sys.stderr,
                dynamic_ncols=True,
                disable=disable, mininterval=0.5, smoothing=0.1)

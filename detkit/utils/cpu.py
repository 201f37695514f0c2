"""What the CPU is, and the oneDNN setting that keeps TensorFlow's kernels safe on it."""
from __future__ import annotations

import os
from typing import MutableMapping, Optional

ONEDNN_ISA_VAR = "ONEDNN_MAX_CPU_ISA"


def cpu_info(path: str = "/proc/cpuinfo") -> tuple[str, set[str]]:
    """(vendor id, feature flags) of the first CPU listed; ("", set()) where /proc/cpuinfo is absent."""
    vendor, flags = "", set()
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "vendor_id" and not vendor:
                    vendor = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
                if vendor and flags:
                    break
    except OSError:
        pass
    return vendor, flags


def onednn_isa_cap(vendor: str, flags: set[str]) -> Optional[str]:
    """The oneDNN ISA cap this CPU needs, or None.

    On AMD CPUs with AVX-512 (Zen 4), TensorFlow 2.21's oneDNN AVX-512 convolution kernels corrupt the
    heap during training (`double free or corruption`, seen on an AMD EPYC with avx512f/avx512_bf16):
    capping oneDNN at AVX2 avoids those kernels and keeps the rest of oneDNN's speed.
    """
    if vendor == "AuthenticAMD" and "avx512f" in flags:
        return "AVX2"
    return None


def apply_onednn_workaround(environ: MutableMapping[str, str] = os.environ,
                            path: str = "/proc/cpuinfo") -> Optional[str]:
    """Set ONEDNN_MAX_CPU_ISA where this CPU needs it (a user's own setting wins); return what was set."""
    if ONEDNN_ISA_VAR in environ:
        return None
    cap = onednn_isa_cap(*cpu_info(path))
    if cap:
        # oneDNN reads this when it creates its first kernel, so setting it after importing TF still works.
        environ[ONEDNN_ISA_VAR] = cap
    return cap

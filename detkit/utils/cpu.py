"""What the CPU is, and the oneDNN setting that keeps TensorFlow's training kernels safe on it."""
from __future__ import annotations

import os
from typing import Mapping, MutableMapping, Optional

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
    """The oneDNN ISA cap training needs on this CPU, or None.

    On AMD CPUs with AVX-512 (Zen 4), TensorFlow 2.21's oneDNN AVX-512 convolution backward kernels crash
    training (SIGSEGV in a JIT kernel's masked store, or glibc aborting on a corrupted heap, at every AVX-512
    level; benchmarks/onednn_repro.py):
    capping oneDNN at AVX2 avoids them and keeps the rest of oneDNN's speed. Inference (forward kernels only)
    runs uncapped there.
    """
    if vendor == "AuthenticAMD" and "avx512f" in flags:
        return "AVX2"
    return None


_models_ran = False


def note_model_run() -> None:
    """Record that this process has run a detector (its oneDNN kernels, and so its ISA, are then fixed)."""
    global _models_ran
    _models_ran = True


def model_ran() -> bool:
    """Whether `note_model_run` was called in this process."""
    return _models_ran


def apply_onednn_workaround(environ: MutableMapping[str, str] = os.environ,
                            path: str = "/proc/cpuinfo") -> Optional[str]:
    """Set ONEDNN_MAX_CPU_ISA where training on this CPU needs it (a user's own setting wins); return what was set.

    Called where training starts, before TensorFlow's first kernel: oneDNN reads the cap once, so in a process
    that already ran a model the cap comes too late (train in a fresh process there).
    """
    if ONEDNN_ISA_VAR in environ:
        return None
    cap = onednn_isa_cap(*cpu_info(path))
    if cap:
        # oneDNN reads this when it creates its first kernel, so setting it after importing TF still works.
        environ[ONEDNN_ISA_VAR] = cap
    return cap


# Flags of CPUs whose matrix units compute in bfloat16 natively (Cooper Lake+/Zen 4 AVX-512-BF16, Sapphire Rapids AMX).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def native_bf16(flags: set[str], isa_cap: Optional[str]) -> tuple[bool, str]:
    """(whether oneDNN can run bfloat16 natively here, why) from the CPU flags and the oneDNN ISA cap."""
    found = [f for f in BF16_FLAGS if f in flags]
    if not found:
        return False, "the CPU has no avx512_bf16/amx_bf16 flag (bfloat16 would be emulated)"
    # oneDNN's ISA names that include bfloat16 instructions; any other cap (e.g. AVX2) excludes them.
    if isa_cap and not any(s in isa_cap.upper() for s in ("BF16", "AMX", "AVX10", "ALL")):
        return False, (f"the CPU has {'/'.join(found)}, but oneDNN is capped at {isa_cap} "
                       f"({ONEDNN_ISA_VAR}), below its bfloat16 kernels")
    return True, f"the CPU has {'/'.join(found)}"


ONEDNN_OPTS_VAR = "TF_ENABLE_ONEDNN_OPTS"


def bf16_runnable_in_process(environ: Mapping[str, str] = os.environ, path: str = "/proc/cpuinfo") -> bool:
    """Whether bfloat16 convolutions can run: oneDNN off, or oneDNN allowed to use its bfloat16 kernels.

    oneDNN capped at AVX2 has no bfloat16 convolution at all ("could not create a primitive descriptor").
    """
    if environ.get(ONEDNN_OPTS_VAR) == "0":
        return True
    cap = environ.get(ONEDNN_ISA_VAR)
    return not cap or native_bf16(cpu_info(path)[1] | set(BF16_FLAGS), cap)[0]


def prepare_bf16_environment(environ: MutableMapping[str, str] = os.environ,
                             path: str = "/proc/cpuinfo") -> Optional[str]:
    """Before TensorFlow is imported for a bfloat16 run: turn oneDNN off where it cannot run bfloat16.

    Returns the variable set, or None. TensorFlow's own (Eigen) kernels then run bfloat16, emulated.
    """
    if ONEDNN_OPTS_VAR in environ and environ[ONEDNN_OPTS_VAR] == "0":
        return None
    if bf16_runnable_in_process(environ, path):
        return None
    environ[ONEDNN_OPTS_VAR] = "0"
    return ONEDNN_OPTS_VAR

"""Mixed precision: pick the Keras dtype policy for this hardware, explain the choice, wrap the optimizer."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator, Optional

import keras
import tensorflow as tf

from detkit.utils import cpu


@dataclass
class PrecisionChoice:
    """The policy a run uses and the one-line reason for it."""
    policy: str
    reason: str
    warning: str = ""

    @property
    def loss_scaling(self) -> bool:
        """float16 gradients underflow without loss scaling; bfloat16 has float32's exponent range."""
        return self.policy == "mixed_float16"


@dataclass
class Hardware:
    """What the precision choice depends on (gathered once, passed in so tests can fake it)."""
    gpu_compute_capabilities: list[tuple[int, int]]
    cpu_flags: set[str]
    onednn_isa_cap: Optional[str]


def detect_hardware() -> Hardware:
    """GPUs' compute capabilities, CPU flags and detkit's oneDNN cap on this machine."""
    caps = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        caps.append(tuple(details.get("compute_capability", (0, 0))))
    # The cap in force: detkit's own (set in the environment when detkit is imported) or the user's.
    cap = os.environ.get(cpu.ONEDNN_ISA_VAR)
    return Hardware(caps, cpu.cpu_info()[1], cap)


def choose_policy(requested: str, hw: Hardware) -> PrecisionChoice:
    """Resolve train.mixed_precision (auto or a policy name) to a policy with its reason."""
    if hw.gpu_compute_capabilities:
        fast16 = all(c >= (7, 0) for c in hw.gpu_compute_capabilities)
        bf16 = all(c >= (8, 0) for c in hw.gpu_compute_capabilities)
        if requested == "auto":
            if fast16:
                return PrecisionChoice("mixed_float16", "the GPUs have tensor cores (compute capability >= 7.0)")
            return PrecisionChoice("float32", "the GPUs have no tensor cores (compute capability < 7.0)")
        if requested == "mixed_bfloat16" and not bf16:
            return PrecisionChoice(requested, "requested", "bfloat16 needs compute capability >= 8.0; it will be slow")
        if requested == "mixed_float16" and not fast16:
            return PrecisionChoice(requested, "requested", "float16 without tensor cores brings no speed-up")
        return PrecisionChoice(requested, "requested")
    native, why = cpu.native_bf16(hw.cpu_flags, hw.onednn_isa_cap)
    if requested == "auto":
        if native:
            return PrecisionChoice("mixed_bfloat16", f"no GPU and {why}")
        return PrecisionChoice("float32", f"no GPU and {why}")
    if requested == "mixed_bfloat16" and not native:
        return PrecisionChoice(requested, "requested", f"mixed_bfloat16 requested, but {why}: bfloat16 is emulated, "
                                                    "expect it slower than float32")
    if requested == "mixed_float16":
        return PrecisionChoice(requested, "requested", "float16 on a CPU is emulated: expect it much slower than float32")
    return PrecisionChoice(requested, "requested")


def describe(choice: PrecisionChoice) -> str:
    """The one log line about precision."""
    scaling = ", dynamic loss scaling" if choice.loss_scaling else ""
    return f"precision {choice.policy}{scaling} ({choice.reason})"


@contextlib.contextmanager
def policy_scope(choice: PrecisionChoice) -> Iterator[None]:
    """Set the Keras global dtype policy for building a model, restoring the previous one afterwards."""
    # Keras keeps the policy in a global; restoring it keeps later models in the same process float32.
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(choice.policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def wrap_optimizer(optimizer: keras.optimizers.Optimizer, choice: PrecisionChoice) -> keras.optimizers.Optimizer:
    """A LossScaleOptimizer around `optimizer` under float16; the optimizer itself otherwise."""
    if choice.loss_scaling:
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


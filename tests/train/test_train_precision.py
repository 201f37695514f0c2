"""The mixed-precision choice: auto per hardware (faked), explicit requests with warnings, loss scaling,
the Keras policy restored after building, and float32 outputs of a bfloat16 model."""
from __future__ import annotations

import os

import keras
import pytest

from detkit.config.tiny import tiny_model_overrides
from detkit.train import precision
from detkit.train.precision import Hardware

AMD_ZEN4 = {"avx2", "avx512f", "avx512_bf16"}


@pytest.mark.parametrize("hw, policy, words", [
    (Hardware([], AMD_ZEN4, None), "mixed_bfloat16", "the CPU has avx512_bf16"),
    # detkit caps oneDNN at AVX2 on AMD AVX-512 CPUs: the bf16 flag is there, the kernels are not.
    (Hardware([], AMD_ZEN4, "AVX2"), "float32", "capped at AVX2"),
    (Hardware([], {"avx2"}, None), "float32", "no avx512_bf16/amx_bf16"),
    (Hardware([], {"amx_bf16", "avx512f"}, "AVX512_CORE_AMX"), "mixed_bfloat16", "amx_bf16"),
    (Hardware([(8, 0)], set(), None), "mixed_float16", "tensor cores"),
    (Hardware([(6, 1)], set(), None), "float32", "no tensor cores"),
])
def test_auto_picks_the_policy_the_hardware_runs_fast(hw, policy, words):
    choice = precision.choose_policy("auto", hw)
    assert choice.policy == policy and words in choice.reason and choice.warning == ""
    assert precision.describe(choice).startswith(f"precision {policy}")


def test_explicit_requests_run_but_warn_where_they_do_not_pay():
    capped = precision.choose_policy("mixed_bfloat16", Hardware([], AMD_ZEN4, "AVX2"))
    assert capped.policy == "mixed_bfloat16" and "expect it slower than float32" in capped.warning
    assert precision.choose_policy("mixed_bfloat16", Hardware([], AMD_ZEN4, None)).warning == ""
    assert "emulated" in precision.choose_policy("mixed_float16", Hardware([], AMD_ZEN4, None)).warning
    assert precision.choose_policy("float32", Hardware([(8, 0)], set(), None)).warning == ""
    # Only float16 needs loss scaling: bfloat16 has float32's exponent range.
    f16 = precision.choose_policy("mixed_float16", Hardware([(8, 0)], set(), None))
    assert f16.loss_scaling and precision.describe(f16) == "precision mixed_float16, dynamic loss scaling (requested)"
    assert not capped.loss_scaling
    opt = keras.optimizers.SGD(0.1)
    assert isinstance(precision.wrap_optimizer(opt, f16), keras.optimizers.LossScaleOptimizer)
    assert precision.wrap_optimizer(opt, capped) is opt


def test_policy_scope_restores_the_global_policy_and_keeps_outputs_float32(tmp_path):
    """A mixed_float16 tiny Faster R-CNN computes in float16 but returns float32 boxes and scores."""
    import tensorflow as tf

    from detkit.config import load_config
    from detkit.train.trainer import build_model

    cfg = load_config([], tiny_model_overrides())
    choice = precision.PrecisionChoice("mixed_float16", "test")
    with precision.policy_scope(choice):
        model = build_model(cfg, 2)
    assert keras.mixed_precision.global_policy().name == "float32"
    assert model.rpn_head.conv.compute_dtype == "float16" and model.rpn_head.conv.kernel.dtype == "float32"
    out = model({"image": tf.zeros([1, 64, 96, 3]), "image_hw": tf.constant([[64, 96]])})
    assert out["boxes"].dtype == tf.float32 and out["scores"].dtype == tf.float32
    losses = model.compute_losses(tf.zeros([1, 64, 96, 3]), tf.constant([[64, 96]]),
                                  tf.constant([[[10.0, 10.0, 50.0, 40.0]]]), tf.constant([[1]]),
                                  tf.constant([[True]]))
    assert all(v.dtype == tf.float32 for v in losses.values())


def test_explicit_bfloat16_without_native_support_runs_and_warns(synth_dataset, tmp_path):
    """About 15 s. oneDNN capped at AVX2 has no bfloat16 convolution: `detkit train` turns oneDNN off before
    TensorFlow starts, trains in bfloat16 anyway and says so in one warning line."""
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=repo, ONEDNN_MAX_CPU_ISA="AVX2")
    for key in ("TF_CONFIG", "TF_ENABLE_ONEDNN_OPTS"):
        env.pop(key, None)
    proc = subprocess.run(
        [sys.executable, "-m", "detkit", "train", "-o", f"dataset.dir={synth_dataset}", "-o", "dataset.split=synth",
         "-o", "dataset.image={min_size: 96, max_size: 128}", *[a for o in tiny_model_overrides() for a in ("-o", o)],
         "-o", f"train.job_dir={tmp_path}", "-o", "train.run_name=bf16", "-o", "train.num_steps=2",
         "-o", "train.image_summary_every_steps=0", "-o", "train.mixed_precision=mixed_bfloat16"],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.replace("\r", "\n").splitlines() if line.startswith("detkit:")]
    assert "detkit: precision mixed_bfloat16 (requested)" in lines
    warnings = [line for line in lines if line.startswith("detkit: warning:")]
    assert len(warnings) == 1 and "mixed_bfloat16 requested" in warnings[0]
    assert "expect it slower than float32" in warnings[0]
    assert any(line.startswith("detkit: finished at step 2") for line in lines)

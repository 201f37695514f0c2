"""Every weight of the detector goes into its checkpoint and comes back."""
import keras
import numpy as np
import tensorflow as tf

from detkit.config import load_config
from detkit.config.tiny import tiny_model_overrides
from detkit.models.build import build_detector
from detkit.runs.restore import restore_model

TINY = tiny_model_overrides()


def _model(seed):
    keras.utils.set_random_seed(seed)
    return build_detector(load_config(overrides=TINY), num_classes=3)


def test_save_restore_covers_every_variable(tmp_path):
    a, b = _model(1), _model(2)
    prefix = tf.train.Checkpoint(model=a).save(str(tmp_path / "ckpt"))
    restore_model(b, prefix)
    assert len(a.variables) == len(b.variables)
    for va, vb in zip(a.variables, b.variables):
        np.testing.assert_array_equal(va.numpy(), vb.numpy(), err_msg=va.path)

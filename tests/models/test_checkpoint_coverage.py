"""Every weight of the detector goes into its checkpoint and comes back."""
import keras
import numpy as np
import tensorflow as tf

from detkit.config import load_config
from detkit.models.faster_rcnn import FasterRCNN
from detkit.train import checkpoints

TINY = ["model.base_network.name=small_resnet", "model.base_network.weights=none",
        "model.base_network.small_widths=[8,8,16,16]", "model.base_network.small_blocks=[0,1,1,1]",
        "model.rpn.channels=16", "model.rcnn.fc_sizes=[16,16]"]


def _model(seed):
    keras.utils.set_random_seed(seed)
    model = FasterRCNN(load_config(overrides=TINY).model, num_classes=3)
    model.build_for_inference()
    return model


def test_save_restore_covers_every_variable(tmp_path):
    a, b = _model(1), _model(2)
    prefix = tf.train.Checkpoint(model=a).save(str(tmp_path / "ckpt"))
    checkpoints.restore_model(b, prefix)
    assert len(a.variables) == len(b.variables)
    for va, vb in zip(a.variables, b.variables):
        np.testing.assert_array_equal(va.numpy(), vb.numpy(), err_msg=va.path)

"""The whole detector learns: a few dozen steps on one raccoon photo."""
import keras

from detkit.config import load_config
from detkit.models.build import build_detector
from tests.models.overfit import overfit_one_image

TINY = [
    "model.base_network.name=small_resnet", "model.base_network.weights=none",
    "model.base_network.freeze_batchnorm=false", "model.base_network.small_widths=[16,32,32,64]",
    "model.base_network.small_blocks=[0,1,1,1]", "model.rpn.channels=64", "model.rcnn.fc_sizes=[128]",
    "model.anchors.sizes=[32,64,128,256]", "model.rcnn.target.minibatch_size=32",
    "model.rpn.train_proposals.pre_nms_top_n=600", "model.rpn.train_proposals.post_nms_top_n=100",
    "model.rpn.test_proposals.pre_nms_top_n=300", "model.rpn.test_proposals.post_nms_top_n=50",
]


def test_overfit_one_image(raccoon_dir):
    keras.utils.set_random_seed(0)
    model = build_detector(load_config(overrides=TINY), num_classes=1)
    fit = overfit_one_image(model, raccoon_dir, steps=100)
    assert fit.final_loss() < 0.5 * fit.first_loss(), fit.losses
    assert fit.num_detections > 0
    assert fit.top_iou > 0.5, fit.top_iou
    assert fit.top_label == 1

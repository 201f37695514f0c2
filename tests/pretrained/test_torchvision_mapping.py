import numpy as np
import pytest
import tensorflow as tf

from detkit.errors import StateDictError
from detkit.models.build import build_detector
from detkit.pretrained import torchvision as tv

R50 = "fasterrcnn_resnet50_fpn"


def test_detect_arch_from_keys_and_file_name():
    common = ["roi_heads.box_predictor.cls_score.weight"]
    assert tv.detect_arch(common + ["backbone.body.layer1.0.conv1.weight"]) == R50
    mobile = common + ["backbone.body.16.0.weight"]
    assert tv.detect_arch(mobile, "x/fasterrcnn_mobilenet_v3_large_fpn.pth") == "fasterrcnn_mobilenet_v3_large_fpn"
    assert tv.detect_arch(mobile, "fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth") == \
        "fasterrcnn_mobilenet_v3_large_320_fpn"
    # The two MobileNets share every key: a file name that spells neither arch is refused, naming both.
    for name in ("model.pth", "", "epoch320.pth", "mobilenet_v3_320.pth"):
        with pytest.raises(StateDictError, match="fasterrcnn_mobilenet_v3_large_fpn .*and "
                                                 "fasterrcnn_mobilenet_v3_large_320_fpn.*give --arch"):
            tv.detect_arch(mobile, name)
    with pytest.raises(StateDictError, match="file name says fasterrcnn_mobilenet_v3_large_fpn but the weights "
                                             "are those of fasterrcnn_resnet50_fpn; give --arch"):
        tv.detect_arch(common + ["backbone.body.layer1.0.conv1.weight"], "fasterrcnn_mobilenet_v3_large_fpn.pth")
    with pytest.raises(StateDictError, match="roi_heads.box_predictor.cls_score.weight"):
        tv.detect_arch(["fc.weight"])
    with pytest.raises(StateDictError, match="backbone.body.layer1.0.conv1.weight"):
        tv.detect_arch(common)


def test_num_classes_excludes_background():
    assert tv.num_classes_in({"roi_heads.box_predictor.cls_score.weight": np.zeros([91, 1024])}) == 90
    with pytest.raises(StateDictError, match="cls_score"):
        tv.num_classes_in({})


@pytest.mark.parametrize("arch", tv.ARCHS)
def test_arch_config_is_a_valid_config(arch):
    from detkit.config import dump_yaml, load_config

    cfg = tv.arch_config(arch)
    assert cfg.model.architecture == "fpn"
    assert cfg.dataset.image.size_rounding == "floor"
    assert (cfg.dataset.image.min_size, cfg.dataset.image.max_size) == (
        (320, 640) if "320" in arch else (800, 1333))
    assert cfg.model.rpn.test_proposals.post_nms_top_n == (150 if "320" in arch else 1000)
    # As a run's config.yml: read back through the loader, every key checked, the same config.
    path = f"/tmp/detkit-test-{arch}.yml"
    with open(path, "w") as fh:
        fh.write(dump_yaml(cfg))
    assert load_config([path]) == cfg
    with pytest.raises(StateDictError, match="unknown torchvision arch"):
        tv.arch_config("retinanet")


def _model(num_classes=2):
    return build_detector(tv.arch_config(R50), num_classes)


def test_state_dict_round_trip_gives_the_same_detections():
    source, target = _model(), _model()
    state = tv.export_state_dict(source)
    assert state["roi_heads.box_predictor.bbox_pred.weight"].shape == (12, 1024)
    assert not state["roi_heads.box_predictor.bbox_pred.weight"][:4].any()
    assert state["backbone.fpn.inner_blocks.3.0.weight"].shape == (256, 2048, 1, 1)
    assert state["rpn.head.conv.0.0.weight"].shape == (256, 256, 3, 3)
    assert state["roi_heads.box_head.fc6.weight"].shape == (1024, 256 * 7 * 7)
    tv.assign_state_dict(target, state, R50)
    image = tf.random.stateless_uniform([1, 96, 128, 3], [1, 2], 0, 255)
    a = source.stages(image, tf.constant([[96, 128]]))
    b = target.stages(image, tf.constant([[96, 128]]))
    for key in ("proposals", "boxes", "scores"):
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), atol=1e-5)


def test_fc6_reads_torch_channel_first_flattening():
    model = _model()
    state = tv.export_state_dict(model)
    # torch's fc6 input index is c * 49 + y * 7 + x; Keras' kernel row for the same input must hold it.
    w = np.zeros_like(state["roi_heads.box_head.fc6.weight"])
    w[5, 3 * 49 + 2 * 7 + 4] = 1.0
    state["roi_heads.box_head.fc6.weight"] = w
    tv.assign_state_dict(model, state, R50)
    pooled = np.zeros([1, 7, 7, 256], np.float32)
    pooled[0, 2, 4, 3] = 2.0
    x = model.rcnn_head.fc1(tf.reshape(tf.transpose(pooled, [0, 3, 1, 2]), [1, -1])).numpy()
    bias = state["roi_heads.box_head.fc6.bias"][5]
    np.testing.assert_allclose(x[0, 5], max(2.0 + bias, 0.0), atol=1e-6)


def test_bad_state_dicts_name_the_key():
    model = _model()
    state = tv.export_state_dict(model)
    missing = {k: v for k, v in state.items() if k != "rpn.head.cls_logits.bias"}
    with pytest.raises(StateDictError, match="rpn.head.cls_logits.bias"):
        tv.assign_state_dict(model, missing, R50)
    wrong = dict(state, **{"backbone.fpn.layer_blocks.0.0.weight": np.zeros([256, 256, 1, 1], np.float32)})
    with pytest.raises(StateDictError, match=r"layer_blocks.0.0.weight.*\(256, 256, 3, 3\)"):
        tv.assign_state_dict(model, wrong, R50)
    extra = dict(state, **{"roi_heads.mask_head.weight": np.zeros([3], np.float32)})
    with pytest.raises(StateDictError, match="roi_heads.mask_head.weight"):
        tv.assign_state_dict(model, extra, R50)
    classes = dict(state, **{"roi_heads.box_predictor.bbox_pred.weight": np.zeros([364, 1024], np.float32)})
    with pytest.raises(StateDictError, match=r"bbox_pred.weight.*\(12, 1024\)"):
        tv.assign_state_dict(model, classes, R50)
    with pytest.raises(StateDictError, match="not a fasterrcnn_mobilenet_v3_large_fpn"):
        tv.assign_state_dict(model, state, "fasterrcnn_mobilenet_v3_large_fpn")

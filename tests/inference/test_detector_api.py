"""The public Python API: `from detkit import Detector`, a packed .tar as a checkpoint, one image or a list."""
import os

import numpy as np
from PIL import Image


def _image(raccoon_dir: str, n: int) -> np.ndarray:
    return np.asarray(Image.open(os.path.join(raccoon_dir, "images", f"raccoon-{n}.jpg")).convert("RGB"))


def test_detector_from_a_packed_tar_equals_the_run(tiny_run, raccoon_dir, tmp_path):
    from detkit import Detector, runs

    tar = str(tmp_path / "run.tar")
    runs.pack(tiny_run["run_dir"], tar)
    from_tar = Detector.from_checkpoint(tar)
    from_run = Detector.from_checkpoint(tiny_run["run_dir"])
    assert from_tar.checkpoint.run_dir == tar and from_tar.checkpoint.step == tiny_run["step"]
    assert from_tar.class_names == from_run.class_names == ["raccoon"]
    image = _image(raccoon_dir, 1)
    a = from_tar.predict(image, min_prob=0.0)
    b = from_run.predict(image, min_prob=0.0)
    assert a and [d.to_json() for d in a] == [d.to_json() for d in b]
    assert not [p for p in os.listdir(tmp_path) if p != "run.tar"]  # the temporary unpacked run is gone


def test_predict_takes_one_image_or_a_list(tiny_run, raccoon_dir):
    from detkit import Detection, Detector

    detector = Detector.from_checkpoint(tiny_run["run_dir"])
    images = [_image(raccoon_dir, 1), _image(raccoon_dir, 2)[:300, :200]]
    singles = [detector.predict(im, min_prob=0.0) for im in images]
    assert all(isinstance(d, Detection) for d in singles[0])
    listed = detector.predict(images, min_prob=0.0)
    assert [[d.to_json() for d in ds] for ds in listed] == [[d.to_json() for d in ds] for ds in singles]
    # Two images of one size go through the model in one call without padding: the same detections.
    same_size = [images[0], images[0][:, ::-1].copy()]
    batched = detector.predict(same_size, min_prob=0.0, batch_size=2)
    for got, image in zip(batched, same_size):
        want = detector.predict(image, min_prob=0.0)
        assert len(got) == len(want)
        np.testing.assert_allclose([d.bbox for d in got], [d.bbox for d in want], atol=1e-2)
        np.testing.assert_allclose([d.prob for d in got], [d.prob for d in want], atol=1e-4)


def test_filters_apply_to_every_image_of_a_list(tiny_run, raccoon_dir):
    from detkit import Detector

    detector = Detector.from_checkpoint(tiny_run["run_dir"])
    images = [_image(raccoon_dir, 1), _image(raccoon_dir, 3)]
    assert detector.predict(images, min_prob=0.0, ignore_classes=["raccoon"]) == [[], []]
    capped = detector.predict(images, min_prob=0.0, max_detections=2)
    assert [len(d) for d in capped] == [2, 2]


def test_inference_does_not_import_training_and_runs_does_not_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys, detkit.runs, detkit.runs.info, detkit.runs.pack\n"
            "assert 'tensorflow' not in sys.modules, 'detkit.runs imported TensorFlow'\n"
            "import detkit.inference.detector, detkit.inference.predict, detkit.inference.export\n"
            "print(sorted(m for m in sys.modules if m.startswith('detkit.train')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_a_keras_model_in_memory_detects_as_its_run(tiny_run, raccoon_dir):
    from detkit import Detector

    from_run = Detector.from_checkpoint(tiny_run["run_dir"])
    in_memory = Detector.from_model(from_run.model, from_run.config, from_run.class_names)
    assert in_memory.checkpoint is None and in_memory.model is from_run.model
    image = _image(raccoon_dir, 3)
    want = [d.to_json() for d in from_run.predict(image, min_prob=0.0)]
    assert want and [d.to_json() for d in in_memory.predict(image, min_prob=0.0)] == want

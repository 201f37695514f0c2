"""The app around a real (tiny, trained) Detector: the API answers exactly what Detector.predict gives."""
from __future__ import annotations

import os

from server_helpers import require_web_extra

require_web_extra()


def test_api_matches_detector_predict_on_a_raccoon_photo(tiny_run, raccoon_dir, make_client):
    from detkit import Detector
    from detkit.inputs import read_image_array

    detector = Detector.from_checkpoint(tiny_run["run_dir"])
    client = make_client(detector, min_prob=detector.config.predict.min_prob)
    path = os.path.join(raccoon_dir, "images", "raccoon-2.jpg")
    with open(path, "rb") as fh:
        data = fh.read()
    response = client.post("/api/fasterrcnn/predict/", files={"image": ("raccoon-2.jpg", data, "image/jpeg")},
                           data={"min_prob": "0.1", "max_detections": "7"})
    assert response.status_code == 200, response.text
    body = response.json()
    image = read_image_array(path)
    assert (body["height"], body["width"]) == image.shape[:2]
    expected = [d.to_json() for d in detector.predict(image, min_prob=0.1, max_detections=7)]
    assert body["objects"] == expected and 0 < len(expected) <= 7
    assert client.get("/api/classes").json() == {"classes": detector.class_names}

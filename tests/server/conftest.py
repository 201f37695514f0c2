"""Fixtures of the web server tests: the app around a fake detector, through FastAPI's test client."""
from __future__ import annotations

from typing import Optional

import pytest
from server_helpers import FakeDetector


@pytest.fixture
def fake_detector() -> FakeDetector:
    return FakeDetector()


@pytest.fixture
def make_client():
    """make_client(detector, **settings) -> a TestClient (closed, with its app's threads, after the test)."""
    from fastapi.testclient import TestClient

    from detkit.server.app import ServerSettings, create_app
    from detkit.server.uploads import Limits

    clients = []

    def make(detector, max_bytes: Optional[int] = None, max_pixels: Optional[int] = None, **kwargs):
        limits = Limits(**{k: v for k, v in (("max_bytes", max_bytes), ("max_pixels", max_pixels)) if v})
        client = TestClient(create_app(detector, ServerSettings(limits=limits, **kwargs)))
        client.__enter__()  # runs the lifespan, so leaving it stops the inference thread
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client, fake_detector):
    return make_client(fake_detector)

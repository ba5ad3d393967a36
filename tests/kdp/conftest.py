from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(autouse=True)
def _polls_match_the_test_sandbox(monkeypatch):
    """The test sandbox settles a KDP transaction in 0.2 s (tests/conftest.py), not in the 2 s the portal assumes
    of Knox (KDP_PROCESSING_SECONDS): the first status poll follows it."""
    monkeypatch.setattr("kdp.tasks.POLL_FIRST_DELAY_SECONDS", 0.3)

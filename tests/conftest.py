"""Shared fixtures."""

from __future__ import annotations

import pytest
from engine_helpers import Tracker


@pytest.fixture
def tracker() -> Tracker:
    return Tracker()

"""The page tests' browser: a headless Chromium per test (tests/kit/chromium.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kit.chromium import chromium as launch


@pytest.fixture
def chromium(tmp_path: Path):
    with launch(tmp_path / "chromium-profile") as tools:
        yield tools

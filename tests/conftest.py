import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UCMD_DIR = Path(os.environ.get("RSHASH_TEST_DATA_DIR", REPO.parent / "shared" / "datasets"))


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def ucmd_data_dir() -> Path:
    images = UCMD_DIR / "UCMerced_LandUse" / "Images"
    if not images.is_dir():
        pytest.skip(f"real UC Merced copy not found at {images} (set RSHASH_TEST_DATA_DIR)")
    return UCMD_DIR

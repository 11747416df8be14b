"""Shared fixtures. Real-data tests read ../shared/data and skip cleanly when it is absent."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download at test time
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CXRGEN_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_iu() -> Path:
    """../shared/data/iu_xray: R2Gen annotation, 19 real smoke images, CheXpert reference labels."""
    path = SHARED_DATA / "iu_xray"
    if not path.is_dir():
        pytest.skip(f"real IU X-ray test data not found at {path} (set CXRGEN_SHARED_DATA)")
    return path

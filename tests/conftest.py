"""Shared fixtures. Real-data tests read ../shared/data and skip cleanly when it is absent.

Plain helpers (the tiny model config, stand-in generator and CLIP, image makers, HTTP helpers)
live in cxrgen.testing, where the bench scripts can use them too.
"""
import os
from pathlib import Path

import pytest

from cxrgen.testing import make_tiny_checkpoint, write_tiny_manifest

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


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """16 studies in a CSV manifest: bright images say cardiomegaly + effusion, dark ones are normal."""
    return write_tiny_manifest(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A random-weight tiny checkpoint (cxrgen.testing.make_tiny_checkpoint), one per test module."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture
def generator_calling(tmp_path):
    """`make(condition)`: a random tiny ReportGenerator whose classifier calls `condition` alone, for any image."""
    import torch

    from cxrgen.inference import ReportGenerator
    from cxrgen.labeler import CONDITIONS

    def make(condition: str):
        gen = ReportGenerator.from_pretrained(make_tiny_checkpoint(tmp_path / "m"))
        with torch.no_grad():
            gen.model.classifier[1].weight.zero_()
            gen.model.classifier[1].bias.fill_(-10.0)
            gen.model.classifier[1].bias[CONDITIONS.index(condition)] = 10.0
        return gen

    return make

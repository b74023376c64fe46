"""Shared test settings: where the reference fixtures live, and a deterministic torch."""
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("DGL_REFERENCE_FIXTURES", ROOT.parent / "shared" / "fixtures" / "dgl_reference"))

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    if not (FIXTURES / "config.json").is_file():
        pytest.fail(f"reference fixtures not found at {FIXTURES}; set DGL_REFERENCE_FIXTURES")
    return FIXTURES

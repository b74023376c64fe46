"""Shared test settings: where the reference fixtures live, and a deterministic torch."""
import os
from pathlib import Path

import pytest
import torch

from tests.reference import materialise

ROOT = Path(__file__).resolve().parents[1]
VENDORED = ROOT / "tests" / "fixtures" / "dgl_reference"
FIXTURES = Path(os.environ.get("DGL_REFERENCE_FIXTURES", VENDORED))

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The reference set as given: the vendored compact one, or ``$DGL_REFERENCE_FIXTURES`` (full or compact)."""
    if not (FIXTURES / "config.json").is_file():
        pytest.fail(f"no reference set at {FIXTURES} (config.json missing): unset DGL_REFERENCE_FIXTURES to use "
                    f"the vendored {VENDORED}, or point it at a full-format set")
    return FIXTURES


@pytest.fixture(scope="session")
def fixture_dir(reference_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with every file of the full layout (the compact set's checkpoints rebuilt bit for bit)."""
    return materialise(reference_dir, tmp_path_factory.mktemp("dgl_reference"))

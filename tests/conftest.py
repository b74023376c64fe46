"""Shared test settings: where the reference fixtures live, and a deterministic torch."""
import os
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURES_IN_SHARED = Path("shared") / "fixtures" / "dgl_reference"

torch.set_num_threads(1)


def _origin_checkout() -> Path | None:
    """The local repository this one was cloned from, if any (a clone in a temporary folder has no
    ``../shared`` of its own, but its origin does)."""
    try:
        url = subprocess.run(["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"],
                             capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return None
    path = Path(url.removeprefix("file://")) if url and "://" not in url.removeprefix("file://") else None
    return path.resolve() if path is not None and path.is_dir() else None


def find_fixtures() -> Path:
    """$DGL_REFERENCE_FIXTURES, else ``../shared/fixtures/dgl_reference`` beside this checkout, else beside
    the local checkout it was cloned from."""
    if "DGL_REFERENCE_FIXTURES" in os.environ:
        return Path(os.environ["DGL_REFERENCE_FIXTURES"])
    beside = ROOT.parent / FIXTURES_IN_SHARED
    origin = _origin_checkout()
    if not beside.is_dir() and origin is not None and (origin.parent / FIXTURES_IN_SHARED).is_dir():
        return origin.parent / FIXTURES_IN_SHARED
    return beside


FIXTURES = find_fixtures()


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    if not (FIXTURES / "config.json").is_file():
        pytest.fail(f"reference fixtures not found at {FIXTURES}; set DGL_REFERENCE_FIXTURES")
    return FIXTURES

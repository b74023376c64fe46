"""Shared test settings and fixtures: where the reference fixtures live, a deterministic torch, and the data
several test modules run on (a generated MSR-VTT workspace, a video gallery, a reference DGL)."""
import os
from pathlib import Path

import pytest
import torch

from tests.reference import materialise

ROOT = Path(__file__).resolve().parents[1]
VENDORED = ROOT / "tests" / "fixtures" / "dgl_reference"
FIXTURES = Path(os.environ.get("DGL_REFERENCE_FIXTURES", VENDORED))

torch.set_num_threads(1)
# The data fixtures import their libraries (PyAV, the tokenizer's) when used: the GPU check's image lacks them.


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


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A generated MSR-VTT folder and a random tiny CLIP file (tests/tiny_runs.py has the flags for them)."""
    from models.clip import CLIP
    from preprocess.make_synthetic import SyntheticConfig, make_dataset
    from tests.tiny_runs import TINY

    root = tmp_path_factory.mktemp("train")
    make_dataset(SyntheticConfig(seed=3, train_videos=16, test_pairs=4, frames=8, size=64, captions_per_video=2, workers=1), root / "data")
    torch.manual_seed(0)
    torch.save(CLIP(TINY).state_dict(), root / "tiny_clip.pt")
    return root


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    """10 videos: 8 from the synthetic generator (mp4) plus Matroska and AVI files in nested folders."""
    from dataloaders.synthetic import write_video
    from preprocess.make_synthetic import SyntheticConfig, make_dataset

    root = tmp_path_factory.mktemp("gallery")
    make_dataset(SyntheticConfig(train_videos=6, test_pairs=1, frames=8, size=32, workers=1), root / "data")
    videos = root / "data" / "videos"
    write_video(videos / "sub" / "texture.mkv", 5, 48, 32, pattern="texture")
    write_video(videos / "sub" / "deeper" / "short.AVI", 2, 40, 40, pattern="texture", seed=1)
    return videos.resolve()


@pytest.fixture(scope="module")
def transformer(fixture_dir):
    """The reference transformer-variant checkpoint as a model."""
    from models.factory import load_dgl

    return load_dgl(fixture_dir / "dgl_transformer_ckpt.pth.tar").eval()


@pytest.fixture(autouse=True)
def empty_hugging_face_cache(tmp_path_factory, monkeypatch):
    """CLIP names are also looked up in the Hugging Face cache: every test sees an empty one, whatever this
    machine has downloaded (tests that need a cache set their own)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.getbasetemp() / "empty_hf_cache"))

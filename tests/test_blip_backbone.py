"""BLIP's registry entry (models/blip/registry.py): where a name leads, what loading refuses, and DGL's text pass
on BLIP equal to BLIP's own text features (BLIP's text tower takes no prompts)."""
import shutil

import pytest
import torch
import torch.nn.functional as F

from models.backbones import get_backbone, get_tokenizer
from models.blip import BlipLoadError
from models.dgl import DGLConfig
from models.factory import create_model
from tests.blip_files import Size, write_hf_folder
from tests.tiny_backbones import tiny_backbone

CAPTIONS = ["a man is playing with a dog", "red car", "people cooking in a kitchen on the road with music"]
pytestmark = pytest.mark.filterwarnings("ignore::models.blip.BlipTemperatureWarning")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("blip") / "blip-itm-tiny"
    write_hf_folder(path, Size(64, 1, 2, 8, 32, 32, 2, 2))
    return path


def test_a_folder_leads_to_its_weight_file_as_given_or_in_pretrained_dir(folder):
    resolve = get_backbone("blip").resolve
    weights = folder / "model.safetensors"
    assert resolve(str(folder), None) == weights and resolve(str(weights), None) == weights
    assert resolve(folder.name, folder.parent) == weights
    missing = r"--pretrained_clip_name nowhere: no BLIP weights at nowhere or .*/nowhere;"
    with pytest.raises(FileNotFoundError, match=missing):
        resolve("nowhere", folder.parent)


def test_loading_refuses_an_activation_flag_and_a_missing_vocabulary(folder, tmp_path):
    with pytest.raises(ValueError, match="--clip_activation gelu: BLIP's files record their activation"):
        create_model("blip", folder, activation="gelu")
    bare = shutil.copytree(folder, tmp_path / "bare")
    (bare / "vocab.txt").unlink()
    with pytest.raises(BlipLoadError, match="no BERT vocabulary at .*bare/vocab.txt"):
        create_model("blip", bare)
    with pytest.raises(ValueError, match="needs its BlipConfig"):
        create_model("blip", tiny_backbone("blip").state_dict())


def test_tokenizer_comes_with_the_loaded_weights(folder):
    built = create_model("blip", folder, baseline="meanp")
    assert built.model.clip.vocab_file == folder / "vocab.txt"
    ids, mask = built.tokenizer(CAPTIONS, 35)
    assert torch.equal(ids, get_tokenizer("blip", built.model.clip)(CAPTIONS, 35)[0])
    assert torch.equal(built.model.clip.text_end(ids), mask.sum(dim=-1) - 1)
    blip = built.model.clip
    in_memory = create_model("blip", blip.state_dict(), baseline="meanp", backbone_config=blip.config)
    assert in_memory.tokenizer is None
    with pytest.raises(ValueError, match="backbone 'blip' reads its vocabulary beside its weights file"):
        get_tokenizer("blip")


def test_dgl_text_features_on_blip_are_blips_own(folder):
    """No text prompts reach BLIP's BERT, so DGL's text pass (padding masked, CLS read) is BLIP's feature
    whatever the prompt sizes; the meanP baseline's too."""
    torch.manual_seed(0)
    built = create_model("blip", folder, dgl_config=DGLConfig(backbone="blip", max_frames=2, text_prompt_length=6))
    blip = built.model.clip
    ids, mask = built.tokenizer(CAPTIONS, 20)
    with torch.no_grad():
        own = blip.text_features(ids, mask)
        dgl = F.normalize(built.model.encode_text(ids), dim=-1)
        meanp = F.normalize(create_model("blip", folder, baseline="meanp").model.encode_text(ids), dim=-1)
        unmasked = F.normalize(blip.encode_text(ids, torch.ones_like(mask)), dim=-1)
    torch.testing.assert_close(dgl, own, atol=1e-6, rtol=0)
    torch.testing.assert_close(meanp, own, atol=1e-6, rtol=0)
    assert (unmasked - own).abs().max() > 1e-2  # the padding would change the features if it were seen


"""BLIP at another frame size than its weights' (``--image_resolution``; tokenmix runs the 384 px COCO weights at
224 px): the position embeddings interpolated as BLIP's ``interpolate_pos_embed``, checked against transformers'
``interpolate_pos_encoding`` (the same rule) on a random BLIP; the refusals; a file's momentum encoder resized too."""
import pytest
import torch
import torch.nn.functional as F

from models.blip import BLIP_MEAN, BLIP_STD, Overrides, load_blip
from models.blip.loading import at_resolution
from models.factory import create_model
from tests.blip_files import Size, original_state, write_hf_folder, write_vocab
from tests.tiny_backbones import tiny_backbone

SIZE = Size(vision_width=64, vision_layers=2, vision_heads=2, patch=8, resolution=32, text_width=32, text_layers=2,
            text_heads=4)
pytestmark = pytest.mark.filterwarnings("ignore::models.blip.BlipTemperatureWarning")


@torch.no_grad()
def test_resized_image_features_equal_transformers_interpolated_positions(tmp_path):
    peer = write_hf_folder(tmp_path / "blip", SIZE).eval()
    model = create_model("blip", tmp_path / "blip", image_resolution=56, baseline="meanp").model.clip.eval()
    assert (model.config.image_resolution, model.config.grid_size) == (56, 7)
    torch.manual_seed(0)
    frames = torch.randint(0, 256, (3, 3, 56, 56), dtype=torch.uint8)
    pixels = (frames.float() / 255 - torch.tensor(BLIP_MEAN).view(3, 1, 1)) / torch.tensor(BLIP_STD).view(3, 1, 1)
    cls = peer.vision_model(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state[:, 0]
    expected = F.normalize(peer.vision_proj(cls), dim=-1)
    torch.testing.assert_close(model.image_features(frames), expected, atol=1e-5, rtol=0)
    native = load_blip(tmp_path / "blip")
    assert torch.equal(model.visual.pos_embed[0], native.visual.pos_embed[0])  # CLS position kept
    assert not torch.allclose(model.image_features(frames), F.normalize(peer.vision_proj(  # the grid did change
        peer.vision_model(pixel_values=F.interpolate(pixels, size=32)).last_hidden_state[:, 0]), dim=-1), atol=1e-2)


def test_an_original_files_momentum_positions_are_resized_too(tmp_path):
    peer = write_hf_folder(tmp_path / "hf", SIZE)
    state = original_state(peer)
    state.update({k.replace("visual_encoder.", "visual_encoder_m.", 1): v.clone() for k, v in state.items()
                  if k.startswith("visual_encoder.")})
    write_vocab(tmp_path / "orig")
    torch.save(state, tmp_path / "orig" / "model_base_retrieval_coco.pth")
    model = load_blip(tmp_path / "orig" / "model_base_retrieval_coco.pth", Overrides(vision_heads=2, text_heads=4))
    resized = at_resolution(model, 48)
    assert torch.equal(resized.momentum_state["visual_encoder_m.pos_embed"][0], resized.visual.pos_embed)


def test_sizes_that_cannot_run_are_refused(tmp_path):
    write_hf_folder(tmp_path / "blip", SIZE)
    with pytest.raises(ValueError, match="--image_resolution 36: BLIP's ViT needs a multiple of its patch size 8"):
        create_model("blip", tmp_path / "blip", image_resolution=36, baseline="meanp")


def test_a_backbone_without_resize_refuses_another_size():
    clip = tiny_backbone("openai-clip")
    size = clip.config.image_resolution
    with pytest.raises(ValueError, match=f"--image_resolution {2 * size}: the backbone <state dict> takes {size} px"):
        create_model("openai-clip", clip.state_dict(), image_resolution=2 * size)

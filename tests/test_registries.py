"""Every registered backbone, prompt generator, loss and dataset works with the rest (as timm tests its models):
a new entry is picked up here without a new test."""
import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dataloaders import DATASETS, build_split
from dataloaders.transforms import normalize
from models.backbones import BACKBONES
from models.factory import create_model
from models.checkpoint import export_official_checkpoint, official_names, read_official_checkpoint
from models.dgl import DGL, DGLConfig
from models.factory import official_config_from_state
from models.flops import Shapes
from models.losses import LOSSES, create_loss
from models.prompts import PROMPT_GENERATORS
from tests import layouts
from tests.tiny_backbones import TINY_BACKBONES, tiny_backbone
from utils.optim import build_optimizer, param_groups
from utils.step import TrainStep

FRAMES = 3


def random_ids(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(n, 12, dtype=torch.long)
    ids[:, 0], ids[:, 1:9], ids[:, 9] = 49406, torch.randint(1, 40000, (n, 8), generator=g), 49407
    return ids


def test_every_backbone_has_a_tiny_instance_for_these_tests():
    assert set(TINY_BACKBONES) == set(BACKBONES), "add the missing backbone's tiny instance to tests/tiny_backbones.py"


CAPTIONS = ["a red circle grows", "the blue square slowly moves to the left, then stops", "a cross"]


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_has_the_interface_dgl_uses(name, tmp_path):
    entry = BACKBONES[name]
    torch.manual_seed(0)
    backbone = tiny_backbone(name)
    cfg, traits = backbone.config, backbone.traits
    images = torch.randint(0, 256, (2, 3, cfg.image_resolution, cfg.image_resolution), dtype=torch.uint8)
    tokens = backbone.embed_frames(images)
    assert tokens.shape == (2, 1 + cfg.grid_size ** 2, cfg.vision_width)
    assert backbone.project_frames(tokens[:, traits.vision_cls_index]).shape == (2, cfg.embed_dim)
    ids, mask = entry.tokenizer(backbone)(CAPTIONS, 16)
    assert ids.shape == mask.shape == (3, 16)
    assert torch.equal(backbone.text_end(ids), mask.sum(dim=-1) - 1)  # the last token is where the mask ends
    assert backbone.embed_text(ids).shape == (3, 16, cfg.text_width)
    assert len(backbone.vision_blocks) == cfg.vision_layers and len(backbone.text_blocks) == cfg.text_layers
    assert set(backbone.fingerprint_keys) <= set(backbone.state_dict())
    # uint8 frames are normalised inside the model with exactly the entry's statistics (the loaders ship uint8).
    torch.testing.assert_close(tokens, backbone.embed_frames(normalize(images, name)), atol=1e-5, rtol=1e-5)
    # Loads back through create_model, from its file and from memory, to equal weights.
    written = TINY_BACKBONES[name].write(backbone, tmp_path)
    built = create_model(name, written, dgl_config=DGLConfig(backbone=name, max_frames=FRAMES))
    in_memory = create_model(name, backbone.state_dict(), dgl_config=DGLConfig(backbone=name, max_frames=FRAMES),
                             backbone_config=cfg)
    assert built.weights == entry.resolve(str(written), None)
    for loaded in (built.model.clip, in_memory.model.clip):
        assert loaded.config == cfg and loaded.state_dict().keys() == backbone.state_dict().keys()
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), backbone.state_dict().values()))
    assert built.preprocess.mean == entry.mean and built.preprocess.resolution == cfg.image_resolution
    assert torch.equal(built.tokenizer(CAPTIONS, 16)[0], ids)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_flop_counts_equal_torch_flop_counter(name):
    """The entry's counts of the towers (models/flops.py for CLIP), without the attention products that
    torch.utils.flop_counter cannot see on CPU, equal what the counter sees in DGL's encoders."""
    entry = BACKBONES[name]
    torch.manual_seed(0)
    model = DGL(tiny_backbone(name), DGLConfig(backbone=name, max_frames=FRAMES, prompt_layers=2)).eval()
    res = model.clip.config.image_resolution
    video = torch.randint(0, 256, (2, FRAMES, 3, res, res), dtype=torch.uint8)
    ids, mask = entry.tokenizer(model.clip)(CAPTIONS, 16)  # captions of several lengths: the count follows the longest
    shapes = Shapes.of(model, FRAMES)
    with torch.no_grad():
        prompts = model.prompts()
        with FlopCounterMode(display=False) as video_count:
            model.encode_video(video, prompts)
        with FlopCounterMode(display=False) as text_count:
            model.encode_text(ids, prompts)
    assert video_count.get_total_flops() == entry.video_flops(shapes, 2, attention=False)[0]
    assert text_count.get_total_flops() == entry.text_flops(shapes, 3, int(mask.sum(dim=-1).max()), attention=False)[0]


@pytest.mark.parametrize("variant", sorted(PROMPT_GENERATORS))
def test_prompt_generator_builds_names_and_round_trips_official_checkpoints(variant, tmp_path):
    torch.manual_seed(0)
    config = DGLConfig(shared_latent_space=variant, max_frames=FRAMES, global_prompt_length=2, local_prompt_length=2,
                       text_prompt_length=4, prompt_layers=2)
    model = DGL(tiny_backbone(), config)
    prompts = model.prompts()
    width, text_width = model.clip.config.vision_width, model.clip.config.text_width
    assert prompts.local.shape[0] == prompts.text.shape[0] == 2 and prompts.local.shape[-1] == width
    assert prompts.local.shape[1] == (FRAMES if model.prompt_generator.frame_specific else 1)
    assert prompts.text.shape[-1] == text_width and prompts.text.shape[1] >= config.text_prompt_length // 2
    names = official_names(model)
    assert set(names) == set(model.trainable_parameters())  # every trained tensor has exactly one official name
    assert len(set(names.values())) == len(names)
    export_official_checkpoint(model, tmp_path / "ckpt.pth.tar")
    recovered = official_config_from_state(read_official_checkpoint(tmp_path / "ckpt.pth.tar"),
                                           text_prompt_length=config.text_prompt_length, max_frames=FRAMES)
    assert recovered == dataclasses.replace(config, max_frames=FRAMES)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_is_pair_permutation_invariant_and_exact_under_gradient_caching(name):
    torch.manual_seed(0)
    loss = create_loss(name)
    text, video, scale = torch.randn(6, 8), torch.randn(6, 8), torch.tensor(2.0)
    value = loss(text, video, scale)
    order = torch.randperm(6)
    assert value.ndim == 0 and torch.isfinite(value)
    assert torch.allclose(loss(text[order], video[order], scale), value, atol=1e-5)
    assert loss(text, text, scale) < value  # aligned pairs cost less than random ones
    grads = []
    for chunks in (1, 2):  # the trainer's gradient caching needs a loss on features only
        torch.manual_seed(1)
        model = DGL(tiny_backbone(), DGLConfig(max_frames=2, prompt_layers=2)).train()
        step = TrainStep(model, loss, build_optimizer(param_groups(model, 0.0, 1.0, 0.0), 0.0, (0.9, 0.98), 1e-6),
                         "fp32", torch.device("cpu"), chunks=chunks)
        step.backward(random_ids(4), torch.randint(0, 256, (4, 2, 3, 32, 32), dtype=torch.uint8))
        grads.append({k: p.grad.clone() for k, p in model.trainable_parameters().items()})
    for key in grads[0]:
        assert torch.allclose(grads[0][key], grads[1][key], atol=1e-5, rtol=1e-4), key


@pytest.mark.parametrize("datatype", sorted(DATASETS))
def test_every_dataset_parses_its_official_layout(datatype, tmp_path):
    make = layouts.layout_maker(datatype)
    assert make is not None, f"add make_{datatype}(root) -> DataConfig to tests/layouts.py (its official file layout)"
    cfg = make(tmp_path)
    for subset in ("train", "test"):
        split = build_split(cfg, subset)
        assert split.num_videos > 0 and split.num_captions > 0
        assert set(split.caption_video) <= set(range(split.num_videos))

"""Our BLIP against a peer implementation: transformers' ``BlipForImageTextRetrieval``.

Random small models written by ``save_pretrained`` (and the same weights in the original BLIP release
layout) are loaded with ``load_blip``; image and text features must reproduce transformers' normalised
projections and its ``use_itm_head=False`` cosine matrix, and ITM logits its ``use_itm_head=True`` output.
"""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from models.blip import BlipLoadError, BlipRetrieval, BlipTemperatureWarning, Overrides, blip_tokenizer, load_blip
from models.blip.formats import ORIGINAL_HEAD_WIDTH
from models.dgl import global_local_block
from tests.blip_files import (VOCAB, Size, convert_script_rename, hf_blip, original_state,
                              write_hf_folder, write_vocab)

TOLERANCE = 1e-5
CAPTIONS = ["a man is playing with a dog", "Red car on the road!", "people cooking in a kitchen, 3 of them",
            "a cat", "the woman runs and runs and runs on the blue road with music"]
SIZES = {  # tiny head widths (not 64), transformers' default eps, and other eps, MLP widths and activation
    "small": Size(32, 2, 2, 8, 32, 32, 2, 4),
    "other-eps": Size(48, 1, 3, 16, 48, 24, 3, 2, embed_dim=24, vision_mlp=80, text_mlp=40,
                      vision_eps=1e-2, text_eps=3e-2),
    "one-head": Size(40, 2, 1, 4, 16, 36, 1, 3, embed_dim=8, act="gelu_pytorch_tanh", vision_eps=1e-6),
}


def inputs(size: Size, folder):
    g = torch.Generator().manual_seed(1)
    images = torch.randn(3, 3, size.resolution, size.resolution, generator=g)
    ids, mask = blip_tokenizer(folder, length=16)(CAPTIONS)
    return images, ids, mask


def hf_features(model, images, ids, mask):
    """transformers' retrieval features, as its ``use_itm_head=False`` branch computes them."""
    image = model.vision_model(pixel_values=images).last_hidden_state[:, 0]
    text = model.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
    return F.normalize(model.vision_proj(image), dim=-1), F.normalize(model.text_proj(text), dim=-1)


def check_against_peer(ours, peer, images, ids, mask):
    with torch.no_grad():
        image_ref, text_ref = hf_features(peer, images, ids, mask)
        image, text = ours.image_features(images), ours.text_features(ids, mask)
        assert (image_ref - image).abs().max() < TOLERANCE and (text_ref - text).abs().max() < TOLERANCE
        pairs = len(images)
        cosine = peer(input_ids=ids[:pairs], pixel_values=images, attention_mask=mask[:pairs],
                      use_itm_head=False)
        assert (cosine.itm_score - image @ text[:pairs].t()).abs().max() < TOLERANCE
        assert cosine.itm_score.std() > 0.05  # the cosines spread: equal matrices are not equal by chance
        itm_ids = blip_itm_ids(ids[:pairs])
        ref = peer(input_ids=itm_ids, pixel_values=images, attention_mask=mask[:pairs], use_itm_head=True).itm_score
        logits = ours.itm_logits(itm_ids, mask[:pairs], ours.image_tokens(images))
        assert (ref - logits).abs().max() < TOLERANCE and ref.std() > 0.05


def blip_itm_ids(ids):
    """``ids`` led by ``[ENC]``, as BLIP's retrieval code feeds ITM (it adds [DEC], then [ENC], after the vocabulary)."""
    ids = ids.clone()
    ids[:, 0] = len(VOCAB) + 1
    return ids


@pytest.mark.parametrize("name", sorted(SIZES))
def test_hf_folder_matches_transformers(name, tmp_path):
    size = SIZES[name]
    peer = write_hf_folder(tmp_path, size, safe=name != "one-head")  # one in pytorch_model.bin
    with pytest.warns(BlipTemperatureWarning):  # transformers' retrieval model has no temperature
        ours = load_blip(tmp_path).eval()
    cfg = ours.config
    assert (cfg.vision_heads, cfg.text_heads, cfg.vision_layers, cfg.text_layers) == (
        size.vision_heads, size.text_heads, size.vision_layers, size.text_layers)
    assert (cfg.vision_eps, cfg.text_eps) == (peer.config.vision_config.layer_norm_eps,
                                              peer.config.text_config.layer_norm_eps)
    check_against_peer(ours, peer, *inputs(size, tmp_path))
    weight_file = tmp_path / ("pytorch_model.bin" if name == "one-head" else "model.safetensors")
    with pytest.warns(BlipTemperatureWarning):  # the weight file alone reads as its folder
        assert all(torch.equal(a, b) for a, b in zip(load_blip(weight_file).state_dict().values(),
                                                      ours.state_dict().values()))
    assert blip_tokenizer(tmp_path).enc_id == len(VOCAB) + 1


def test_original_release_file_matches_transformers(tmp_path):
    size = SIZES["other-eps"]
    peer = hf_blip(size, seed=3)
    state = original_state(peer, temp=0.05)
    model_keys = {k for k in state if not k.endswith("_queue") and "_m." not in k and k != "temp"}
    assert {convert_script_rename(k) for k in model_keys} == set(peer.state_dict())  # the layout is the script's
    torch.save({"model": state, "config": {"vit": "tiny"}, "epoch": 5}, tmp_path / "model_tiny_retrieval_coco.pth")
    write_vocab(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BlipTemperatureWarning)  # the original file carries its temperature
        ours = load_blip(tmp_path / "model_tiny_retrieval_coco.pth",
                         Overrides(vision_heads=3, text_heads=2, vision_eps=1e-2, text_eps=3e-2)).eval()
    assert abs(ours.temp.item() - 0.05) < 1e-7 and torch.allclose(ours.logit_scale.exp(), torch.tensor(20.0))
    assert set(ours.momentum_state) == {k for k in state if k not in model_keys and k != "temp"}
    assert torch.equal(ours.momentum_state["vision_proj_m.weight"], state["vision_proj_m.weight"])
    check_against_peer(ours, peer, *inputs(size, tmp_path))


def test_original_release_file_assumes_blips_heads_and_eps(tmp_path):
    """Without overrides, heads are width / 64 and eps BLIP's (1e-6 ViT, 1e-12 BERT): a file with those sizes
    matches a transformers model of those sizes."""
    size = Size(128, 1, 2, 8, 16, 64, 1, 1, vision_eps=1e-6, text_eps=1e-12)
    peer = hf_blip(size, seed=4)
    with torch.no_grad():  # tiny embeddings: the first norms' eps then outweighs their inputs' variance
        for name, p in peer.named_parameters():
            if "embedding" in name and "LayerNorm" not in name:
                p.mul_(1e-3 if name.startswith("vision") else 1e-6)
    torch.save({"model": original_state(peer)}, tmp_path / "weights.pth")
    write_vocab(tmp_path)
    ours = load_blip(tmp_path / "weights.pth").eval()
    assert (ours.config.vision_heads, ours.config.text_heads) == (128 // ORIGINAL_HEAD_WIDTH, 64 // ORIGINAL_HEAD_WIDTH)
    assert (ours.config.vision_eps, ours.config.text_eps) == (1e-6, 1e-12)
    check_against_peer(ours, peer, *inputs(size, tmp_path))


def test_vision_blocks_run_under_dgls_global_local_attention(tmp_path):
    """DGL's global-local block (no global prompts) over T frames equals each frame alone through the block."""
    torch.manual_seed(0)
    write_hf_folder(tmp_path, SIZES["small"])
    with pytest.warns(BlipTemperatureWarning):
        ours = load_blip(tmp_path).eval()
    frames = ours.embed_frames(torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8))
    block = ours.vision_blocks[0]
    joint = global_local_block(block, frames.flatten(0, 1)[None], num_global=0, frames=3)
    assert torch.allclose(joint[0].unflatten(0, (3, -1)), block(frames), atol=1e-5)
    assert ours.project_frames(frames[:, 0]).shape == (3, ours.config.embed_dim)
    again = BlipRetrieval.from_state_dict(ours.state_dict(), ours.config)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), ours.state_dict().values()))


def test_refuses_other_blip_files_and_other_models(tmp_path):
    peer = hf_blip(SIZES["small"])
    state = original_state(peer)
    caption = {k: v for k, v in state.items() if not k.startswith(("itm_head", "vision_proj", "text_proj"))}
    caption["text_decoder.bert.embeddings.word_embeddings.weight"] = torch.zeros(3, 2)
    torch.save({"model": caption}, tmp_path / "model_base_capfilt_large.pth")
    with pytest.raises(BlipLoadError, match="captioning, VQA or pretraining.*expected a Hugging Face"):
        load_blip(tmp_path / "model_base_capfilt_large.pth")
    torch.save({"conv1.weight": torch.zeros(2), "layer1.0.bn1.weight": torch.zeros(2), "fc.weight": torch.zeros(2)},
               tmp_path / "resnet50.pth")
    with pytest.raises(BlipLoadError, match="resnet50.pth holds no BLIP vision tower.*expected"):
        load_blip(tmp_path / "resnet50.pth")
    unknown = dict(state, **{"visual_encoder.blocks.0.adapter.weight": torch.zeros(2)})
    torch.save(unknown, tmp_path / "adapted.pth")
    with pytest.raises(BlipLoadError, match=r"1 tensors no BLIP retrieval model has.*adapter"):
        load_blip(tmp_path / "adapted.pth")
    truncated = {k: v for k, v in state.items() if k != "visual_encoder.blocks.1.mlp.fc2.bias"}
    torch.save(truncated, tmp_path / "truncated.pth")
    with pytest.raises(BlipLoadError, match="vision width 32 is not a multiple of BLIP's head width 64; give its"):
        load_blip(tmp_path / "truncated.pth")
    heads = Overrides(vision_heads=2, text_heads=4)
    with pytest.raises(BlipLoadError, match=r"truncated.pth: missing 1 tensors, e.g. \['visual.blocks.1.mlp.fc2.bias'\]"):
        load_blip(tmp_path / "truncated.pth", heads)
    torch.save(dict(state, **{"text_proj.weight": torch.zeros(3, 3)}), tmp_path / "inconsistent.pth")
    with pytest.raises(BlipLoadError, match="inconsistent.pth: inconsistent tensor shapes: .*text_proj.weight"):
        load_blip(tmp_path / "inconsistent.pth", heads)
    with pytest.raises(BlipLoadError, match="does not exist"):
        load_blip(tmp_path / "nothing.pth")


def test_refuses_hf_folders_of_other_blip_tasks(tmp_path):
    import transformers

    captioner = transformers.BlipForConditionalGeneration(hf_blip(SIZES["small"]).config)
    captioner.save_pretrained(tmp_path)
    with pytest.raises(BlipLoadError, match="BlipForConditionalGeneration.*not BlipForImageTextRetrieval"):
        load_blip(tmp_path)
    write_hf_folder(tmp_path / "itm", SIZES["small"])
    with pytest.raises(BlipLoadError, match="overrides apply to original"):
        load_blip(tmp_path / "itm", Overrides(text_heads=2))
    (tmp_path / "itm" / "vocab.txt").unlink()
    with pytest.raises(BlipLoadError, match="no BERT vocabulary at .*vocab.txt"):
        blip_tokenizer(tmp_path / "itm")

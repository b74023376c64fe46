"""The CLIP backbone against a straightforward computation written here from the raw OpenAI weights."""
import math

import pytest
import torch

from models.clip import CLIP
from models.pretrained import load_clip_state_dict


def layer_norm(x, sd, prefix):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * sd[prefix + ".weight"] + sd[prefix + ".bias"]


def attention(x, sd, prefix, heads, causal):
    """Per-head attention, one head at a time, from in_proj/out_proj."""
    width = x.shape[-1]
    w, b = sd[prefix + ".in_proj_weight"], sd[prefix + ".in_proj_bias"]
    q, k, v = (x @ w[i * width : (i + 1) * width].t() + b[i * width : (i + 1) * width] for i in range(3))
    d = width // heads
    outs = []
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        scores = q[..., sl] @ k[..., sl].transpose(-1, -2) / math.sqrt(d)
        if causal:
            n = x.shape[-2]
            scores = scores + torch.full((n, n), float("-inf")).triu(1)
        outs.append(torch.softmax(scores, -1) @ v[..., sl])
    return torch.cat(outs, -1) @ sd[prefix + ".out_proj.weight"].t() + sd[prefix + ".out_proj.bias"]


def blocks(x, sd, prefix, layers, heads, causal=False):
    for i in range(layers):
        p = f"{prefix}.resblocks.{i}"
        x = x + attention(layer_norm(x, sd, p + ".ln_1"), sd, p + ".attn", heads, causal)
        h = layer_norm(x, sd, p + ".ln_2") @ sd[p + ".mlp.c_fc.weight"].t() + sd[p + ".mlp.c_fc.bias"]
        h = h * torch.sigmoid(1.702 * h)
        x = x + h @ sd[p + ".mlp.c_proj.weight"].t() + sd[p + ".mlp.c_proj.bias"]
    return x


def reference_image(images, sd, cfg):
    p = cfg.vision_patch_size
    patches = images.unfold(2, p, p).unfold(3, p, p)  # [N, 3, g, g, p, p]
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(images.shape[0], -1, 3 * p * p)
    x = patches @ sd["visual.conv1.weight"].reshape(cfg.vision_width, -1).t()
    cls = sd["visual.class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], 1) + sd["visual.positional_embedding"]
    x = layer_norm(x, sd, "visual.ln_pre")
    x = blocks(x, sd, "visual.transformer", cfg.vision_layers, cfg.vision_width // 64)
    return layer_norm(x[:, 0], sd, "visual.ln_post") @ sd["visual.proj"]


def reference_text(ids, sd, cfg):
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"][: ids.shape[1]]
    x = blocks(x, sd, "transformer", cfg.text_layers, cfg.text_width // 64, causal=True)
    x = layer_norm(x, sd, "ln_final")
    return x[torch.arange(ids.shape[0]), ids.argmax(-1)] @ sd["text_projection"]


@pytest.fixture(scope="module")
def tiny(fixture_dir):
    sd = load_clip_state_dict(fixture_dir / "tiny_clip_jit.pt")
    return CLIP.from_state_dict(sd).eval(), sd


def test_image_and_text_embeddings_match_reference(tiny):
    model, sd = tiny
    cfg = model.config
    g = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, cfg.image_resolution, cfg.image_resolution, generator=g)
    ids = torch.randint(1, 1000, (3, 12), generator=g)
    ids[:, 0], ids[torch.arange(3), torch.tensor([11, 5, 8])] = 49406, 49407
    with torch.no_grad():
        assert torch.allclose(model.encode_image(images), reference_image(images, sd, cfg), atol=1e-5)
        assert torch.allclose(model.encode_text(ids), reference_text(ids, sd, cfg), atol=1e-5)


def test_state_dict_round_trips_with_openai_names(tiny):
    model, sd = tiny
    ours = model.state_dict()
    assert list(ours) == [k for k in sd]  # OpenAI key order and names
    assert all(torch.equal(ours[k], sd[k]) for k in sd)
    again = CLIP.from_state_dict({k: v.clone() for k, v in ours.items()})
    assert all(torch.equal(again.state_dict()[k], ours[k]) for k in ours)


def test_sizes_come_from_shapes_not_constants():
    """A CLIP of unusual sizes (width 128, 3 vision layers, patch 8, 40 px, 2 text heads) builds and runs."""
    from models.pretrained import CLIPConfig

    cfg = CLIPConfig(embed_dim=32, image_resolution=40, vision_layers=3, vision_width=128, vision_heads=2,
                     vision_patch_size=8, grid_size=5, context_length=20, vocab_size=49408, text_width=128,
                     text_heads=2, text_layers=1)
    model = CLIP(cfg)
    rebuilt = CLIP.from_state_dict(model.state_dict())
    assert rebuilt.config == cfg
    with torch.no_grad():
        assert rebuilt.encode_image(torch.randn(2, 3, 40, 40)).shape == (2, 32)


def test_uint8_frames_are_normalised_on_the_model_side(tiny):
    from dataloaders.transforms import normalize

    model, _ = tiny
    size = model.config.image_resolution
    pixels = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(model.encode_image(pixels), model.encode_image(normalize(pixels)), atol=1e-5)
    assert not any("pixel" in k for k in model.state_dict())  # OpenAI layout unchanged

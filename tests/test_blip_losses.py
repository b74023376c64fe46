"""BLIP's retrieval losses (models/blip/losses.py, models/blip/objective.py) against hand computations and the
project's symmetric InfoNCE."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.blip import BlipLoadError, Overrides, load_blip
from models.blip.dgl_video import DGLBlip, DGLBlipConfig
from models.blip.losses import (BlipLossConfig, FeatureQueue, MomentumEncoder,
                                check_gradient_caching, clamp_temperature_, id_targets, itc_loss, itm_loss,
                                sample_hard_negatives)
from models.blip.objective import DGLBlipObjective, alpha_warmup
from models.losses import contrastive_loss, cosine_logits
from utils.step import TrainStep
from tests.blip_files import VOCAB, Size, hf_blip, original_state, write_hf_folder, write_vocab


def features(n: int, dim: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return tuple(F.normalize(torch.randn(n, dim, generator=g), dim=-1) for _ in range(2))


def test_temperature_is_clamped_in_place_to_blips_range():
    temp = nn.Parameter(torch.tensor(0.7))
    assert clamp_temperature_(temp) is temp and temp.item() == 0.5 and temp.requires_grad
    temp.data.fill_(1e-4)
    assert clamp_temperature_(temp).item() == pytest.approx(1e-3)
    temp.data.fill_(0.07)
    assert clamp_temperature_(temp).item() == pytest.approx(0.07)


def test_plain_itc_and_empty_queue_without_distillation_equal_symmetric_infonce():
    text, video = features(6)
    temp = torch.tensor(0.05)
    ids = torch.arange(6) * 7
    expected = contrastive_loss(cosine_logits(torch.log(1 / temp), text, video))
    assert abs(itc_loss(text, video, temp, ids) - expected) < 1e-6
    momentum_keys = (text.clone(), video.clone())  # a momentum copy equal to the online model
    empty = FeatureQueue(16, 8)
    assert abs(itc_loss(text, video, temp, ids, momentum_keys, empty, alpha=0.0) - expected) < 1e-6
    empty.enqueue(*features(3, seed=5), torch.tensor([100, 101, 102]))  # a filled queue adds negatives
    assert itc_loss(text, video, temp, ids, momentum_keys, empty, alpha=0.0) - expected > 1e-3


def test_itc_positives_are_every_caption_of_the_video():
    """Two captions of video 3: each is a positive of the other's video row, by hand."""
    text, video = features(3, seed=1)
    ids, temp = torch.tensor([3, 3, 9]), torch.tensor(0.1)
    t2v, v2t = text @ video.t() / temp, video @ text.t() / temp
    targets = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    expected = 0.0
    for logits in (t2v, v2t):
        for row in range(3):
            log_p = logits[row] - torch.logsumexp(logits[row], 0)
            expected += -(targets[row] * log_p).sum() / 3 / 2
    assert torch.equal(id_targets(ids, ids), targets)
    assert abs(itc_loss(text, video, temp, ids) - expected) < 1e-6


def test_full_distillation_against_an_equal_teacher_is_the_entropy():
    """alpha = 1 and a teacher equal to the student: the targets are the student's own softmax, so each
    direction's loss is the mean entropy of its rows."""
    text, video = features(5, seed=2)
    temp = torch.tensor(0.2)
    p_t2v, p_v2t = F.softmax(text @ video.t() / temp, 1), F.softmax(video @ text.t() / temp, 1)
    entropy = sum(-(p * p.log()).sum(1).mean() for p in (p_t2v, p_v2t)) / 2
    loss = itc_loss(text, video, temp, torch.arange(5), (text, video), FeatureQueue(0, 8), alpha=1.0)
    assert abs(loss - entropy) < 1e-6


def test_queued_entries_of_the_same_video_are_positives():
    text, video = features(2, seed=3)
    queue = FeatureQueue(4, 8)
    q_text, q_video = features(2, seed=4)
    queue.enqueue(q_text, q_video, torch.tensor([1, 5]))
    temp, ids = torch.tensor(0.1), torch.tensor([1, 2])
    keys_v, keys_t = torch.cat([video, q_video]), torch.cat([text, q_text])
    targets = torch.tensor([[0.5, 0, 0.5, 0], [0, 1.0, 0, 0]])
    expected = sum(-(targets * F.log_softmax(q @ k.t() / temp, 1)).sum(1).mean()
                   for q, k in ((text, keys_v), (video, keys_t))) / 2
    assert abs(itc_loss(text, video, temp, ids, (text, video), queue) - expected) < 1e-6


def test_plain_itc_refuses_a_teacher_without_momentum_keys():
    text, video = features(2)
    with pytest.raises(ValueError, match="need the momentum encoder's features as keys"):
        itc_loss(text, video, torch.tensor(0.1), torch.arange(2), alpha=0.4)


def test_queue_pointer_wraps_around():
    queue = FeatureQueue(5, 2)
    first, second = torch.arange(6.0).view(3, 2), 10 + torch.arange(6.0).view(3, 2)
    queue.enqueue(first, -first, torch.tensor([0, 1, 2]))
    assert (int(queue.ptr), int(queue.filled)) == (3, 3)
    assert torch.equal(queue.entries()[2], torch.tensor([0, 1, 2]))
    queue.enqueue(second, -second, torch.tensor([3, 4, 5]))
    # slots 3, 4 then 0: the oldest entry (id 0) is the one replaced
    assert (int(queue.ptr), int(queue.filled)) == (1, 5)
    text, video, ids = queue.entries()
    assert torch.equal(ids, torch.tensor([5, 1, 2, 3, 4]))
    assert torch.equal(text, torch.stack([second[2], first[1], first[2], second[0], second[1]]))
    assert torch.equal(video, -text)
    with pytest.raises(ValueError, match="--queue_size 5 is smaller than the global batch"):
        queue.enqueue(torch.zeros(6, 2), torch.zeros(6, 2), torch.arange(6))
    restored = FeatureQueue(5, 2)
    restored.load_state_dict(queue.state_dict())  # a resumed run continues where the saved one stopped
    assert all(torch.equal(a, b) for a, b in zip(restored.entries(), queue.entries()))
    restored.enqueue(first[:1], first[:1], torch.tensor([9]))
    assert int(restored.ptr) == 2 and torch.equal(restored.entries()[2], torch.tensor([5, 9, 2, 3, 4]))
    none = FeatureQueue(0, 2)
    none.enqueue(first, first, torch.arange(3))
    assert none.entries()[0].shape == (0, 2)


def test_ema_update_by_hand():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    online[1].requires_grad_(False)
    ema = MomentumEncoder(online, momentum=0.9)
    start = online[0].weight.detach().clone()
    frozen = online[1].weight.detach().clone()
    with torch.no_grad():
        online[0].weight.add_(1.0)
    ema.update(online)
    first = 0.9 * start + 0.1 * (start + 1.0)
    assert (ema.model[0].weight - first).abs().max() < 1e-6
    with torch.no_grad():
        online[0].weight.mul_(2.0)
    ema.update(online)
    assert (ema.model[0].weight - (0.9 * first + 0.1 * 2 * (start + 1.0))).abs().max() < 1e-6
    assert torch.equal(ema.model[1].weight, frozen) and not ema.model[0].weight.requires_grad


def test_hard_negatives_never_positive_deterministic_and_softmax_distributed():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 5.0]] * 4000)
    query_ids = torch.full((4000,), 7)
    key_ids = torch.tensor([7, 3, 4, 5, 7])  # keys 0 and 4 show the query's video
    picks = sample_hard_negatives(logits, query_ids, key_ids, torch.Generator().manual_seed(0))
    assert not ((picks == 0) | (picks == 4)).any()
    again = sample_hard_negatives(logits, query_ids, key_ids, torch.Generator().manual_seed(0))
    other = sample_hard_negatives(logits, query_ids, key_ids, torch.Generator().manual_seed(1))
    assert torch.equal(picks, again) and not torch.equal(picks, other)
    expected = torch.tensor([1.0, 0.0, -1.0]).softmax(0)  # over the negatives 1, 2, 3
    observed = torch.bincount(picks, minlength=5)[1:4] / 4000
    assert (observed - expected).abs().max() < 0.03  # ~4 standard deviations of 4000 draws
    tiny_temperature = torch.tensor([[0.0, -2000.0, 1000.0]])  # BLIP's softmax-then-mask would leave all zeros
    assert sample_hard_negatives(tiny_temperature, torch.tensor([1]), torch.tensor([0, 2, 1])).item() in (0, 1)
    with pytest.raises(ValueError, match="no negative for video id 4: every pair of the gathered batch shows it"):
        sample_hard_negatives(torch.zeros(1, 2), torch.tensor([4]), torch.tensor([4, 4]))


def test_itm_loss_labels_and_pairing_by_hand():
    table = {}

    def itm(ids, mask, tokens):  # a known score per (caption id, video token id) pair
        table["pairs"] = list(zip(ids[:, 0].tolist(), tokens[:, 0, 0].tolist()))
        return torch.stack([ids[:, 0].float() * 0.1, tokens[:, 0, 0] * 0.2], dim=1)

    ids, mask = torch.tensor([[1], [2]]), torch.ones(2, 1)
    tokens = torch.tensor([10.0, 20.0]).view(2, 1, 1)
    loss = itm_loss(itm, ids, mask, tokens, tokens.flip(0), ids.flip(0), mask)
    assert table["pairs"] == [(1, 10.0), (2, 20.0), (1, 20.0), (2, 10.0), (2, 10.0), (1, 20.0)]
    logits = torch.tensor([[0.1 * a, 0.2 * b] for a, b in table["pairs"]])
    expected = sum(-F.log_softmax(row, 0)[label] for row, label in zip(logits, [1, 1, 0, 0, 0, 0])) / 6
    assert abs(loss - expected) < 1e-6


def test_gradient_caching_refused_with_itm_only():
    check_gradient_caching(1, itm_weight=1.0)
    check_gradient_caching(4, itm_weight=0.0)
    with pytest.raises(ValueError, match=r"--gradient_accumulation_steps 4 \(chunked encoding\) is exact for the "
                                         r"ITC only.*set --itm_weight 0, or --gradient_accumulation_steps 1"):
        check_gradient_caching(4, itm_weight=1.0)
    with pytest.raises(ValueError, match="--alpha must lie in"):
        BlipLossConfig(alpha=1.5)


SIZE = Size(32, 2, 2, 8, 32, 32, 2, 4)


@pytest.fixture(scope="module")
def tiny_dgl_blip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("blip")
    write_hf_folder(folder, SIZE)

    def build(**config):
        torch.manual_seed(0)
        return DGLBlip(load_blip(folder, temperature=0.07), DGLBlipConfig(**config))
    return build


def batch(seed: int = 3, size: int = 4):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, len(VOCAB), (size, 8), generator=g)
    ids[:, 0] = VOCAB.index("[CLS]")
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    return ids, mask, torch.randn(size, 2, 3, 32, 32, generator=g)


def test_gradient_caching_is_exact_for_itc_with_momentum_queue_and_teacher(tiny_dgl_blip):
    """utils/step.py's scheme (features without a graph, the loss and its feature gradients on the whole batch,
    each chunk re-encoded and back-propagated) gives the full-batch gradient of the distilled ITC."""
    ids, mask, video = batch()
    video_ids = torch.tensor([0, 1, 2, 0])
    model = tiny_dgl_blip(global_prompt_length=2)
    momentum = MomentumEncoder(model, 0.5)
    with torch.no_grad():
        model.global_prompts.add_(0.3)  # the teacher now differs from the student
        keys = (momentum.model.encode_text(ids, mask), momentum.model.encode_video(video))
    queue = FeatureQueue(8, SIZE.embed_dim)
    queue.enqueue(*features(3, dim=SIZE.embed_dim, seed=6), torch.tensor([1, 7, 8]))

    def loss_of(text, vid):
        return itc_loss(text, vid, model.temp, video_ids, keys, queue, alpha=0.4)

    loss_of(*model(ids, mask, video)).backward()
    full = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}  # not ITM's
    model.zero_grad()
    chunks = [(ids[:2], mask[:2], video[:2]), (ids[2:], mask[2:], video[2:])]
    with torch.no_grad():
        cached = [model(*c) for c in chunks]
    text = torch.cat([t for t, _ in cached]).requires_grad_()
    vid = torch.cat([v for _, v in cached]).requires_grad_()
    loss_of(text, vid).backward()
    for k, c in enumerate(chunks):
        text_k, vid_k = model(*c)
        torch.autograd.backward([text_k, vid_k], [text.grad[2 * k: 2 * k + 2], vid.grad[2 * k: 2 * k + 2]])
    assert {n for n, p in model.named_parameters() if p.grad is not None} == set(full)
    for name, p in model.named_parameters():
        if name not in full:
            continue
        assert (p.grad - full[name]).abs().max() <= 1e-5 * (1 + full[name].abs().max()), name
    assert full["global_prompts"].abs().max() > 1e-4 and full["blip.temp"].abs() > 1e-4


def test_objective_trains_itc_and_itm_and_fills_the_queue(tiny_dgl_blip):
    model = tiny_dgl_blip(global_prompt_length=2)
    objective = DGLBlipObjective(model, BlipLossConfig(alpha=0.4, queue_size=6, momentum=0.9), enc_id=len(VOCAB) + 1,
                                 generator=torch.Generator().manual_seed(0))
    ids, mask, video = batch()
    video_ids = torch.tensor([0, 1, 2, 0])
    losses = objective(ids, mask, video, video_ids)
    assert set(losses) == {"itc", "itm", "loss", "backward"} and torch.isfinite(losses["loss"])
    assert abs(losses["loss"] - losses["itc"] - losses["itm"]) < 1e-6
    assert abs(losses["backward"] - losses["loss"]) < 1e-6  # one rank: world · ITC + ITM is the loss
    assert losses["itm"] > 0.1 and math.isfinite(losses["itc"].item())
    losses["backward"].backward()
    assert model.blip.itm_head.weight.grad.abs().max() > 0 and model.global_prompts.grad.abs().max() > 0
    assert (int(objective.queue.filled), int(objective.queue.ptr)) == (4, 4)
    assert torch.equal(objective.queue.entries()[2], video_ids)
    assert not any(p.requires_grad for p in objective.momentum.parameters())
    objective(ids, mask, video, video_ids, alpha=0.0)
    assert (int(objective.queue.filled), int(objective.queue.ptr)) == (6, 2)
    assert [alpha_warmup(0.4, 0, s, 10) for s in (0, 5, 20)] == [0.0, 0.2, 0.4] and alpha_warmup(0.4, 1, 0, 10) == 0.4


@pytest.mark.parametrize("mode", ["full", "prompts"])
def test_momentum_copy_starts_from_an_original_files_momentum_encoders_in_full_training(tmp_path, mode):
    state = original_state(hf_blip(SIZE, seed=2))  # its momentum encoders are the model's weights + 0.01
    torch.save({"model": state}, tmp_path / "model_tiny_retrieval_coco.pth")
    write_vocab(tmp_path)
    blip = load_blip(tmp_path / "model_tiny_retrieval_coco.pth", Overrides(vision_heads=2, text_heads=4))
    assert blip.momentum_state
    model = DGLBlip(blip, DGLBlipConfig(global_prompt_length=2, training_mode=mode))
    objective = DGLBlipObjective(model, BlipLossConfig(), enc_id=len(VOCAB) + 1)
    assert blip.momentum_state == {}  # moved out, not copied into the momentum model
    online, ema = model.blip.state_dict(), objective.momentum.model.blip.state_dict()
    shift = 0.01 if mode == "full" else 0.0
    for name in ("visual.blocks.1.attn.in_proj_weight", "visual.cls_token", "text_proj.bias",
                 "text_encoder.encoder.layer.0.crossattention.self.key.weight"):
        assert (ema[name] - online[name] - shift).abs().max() < 1e-6, name
    assert torch.equal(ema["itm_head.weight"], online["itm_head.weight"]) and torch.equal(ema["temp"], online["temp"])
    assert torch.equal(objective.momentum.model.global_prompts, model.global_prompts)
    if mode == "full":
        del state["visual_encoder_m.blocks.0.mlp.fc1.bias"]
        torch.save(state, tmp_path / "incomplete.pth")
        model = DGLBlip(load_blip(tmp_path / "incomplete.pth", Overrides(vision_heads=2, text_heads=4)))
        with pytest.raises(BlipLoadError, match=r"momentum encoders do not cover the model: missing "
                                                r"\['visual.blocks.0.mlp.fc1.bias'\]"):
            DGLBlipObjective(model, BlipLossConfig(), enc_id=len(VOCAB) + 1)


def test_objective_resumes_exactly_from_its_state_dict(tiny_dgl_blip):
    """Model, momentum copy and queue travel in the objective's state dict; with the generator's state, the
    next step of a resumed objective equals the uninterrupted one's."""
    config = BlipLossConfig(alpha=0.4, queue_size=6, momentum=0.9)

    def build(seed: int) -> DGLBlipObjective:
        return DGLBlipObjective(tiny_dgl_blip(global_prompt_length=2), config, enc_id=len(VOCAB) + 1,
                                generator=torch.Generator().manual_seed(seed))

    running = build(0)
    video_ids = torch.tensor([0, 1, 2, 3])
    optimizer = torch.optim.AdamW(running.model.param_groups(1e-3, 1e-2, 0.05))
    running(*batch(seed=3), video_ids)["backward"].backward()
    optimizer.step()
    saved, generator = running.state_dict(), running.generator.get_state()
    assert any(k.startswith("momentum.model.") for k in saved) and "queue.filled" in saved
    resumed = build(1)
    resumed.load_state_dict(saved)
    resumed.generator.set_state(generator)
    after = [objective(*batch(seed=4), video_ids) for objective in (running, resumed)]
    assert all(torch.equal(after[0][k], after[1][k]) for k in ("itc", "itm", "backward"))
    assert torch.equal(running.queue.entries()[1], resumed.queue.entries()[1])


def chunked_objective(build, mode: str, config: dict) -> DGLBlipObjective:
    """A float64 DGL-BLIP objective whose momentum teacher differs from the student and whose queue holds three
    entries (one of them a positive of video 1); built alike on every call."""
    objective = DGLBlipObjective(build(global_prompt_length=2, training_mode=mode).double(),
                                 BlipLossConfig(**config, itm_weight=0.0), enc_id=len(VOCAB) + 1)
    with torch.no_grad():
        objective.model.global_prompts.add_(0.3)
        if mode == "full":
            objective.model.blip.vision_proj.weight.mul_(1.2)
    if objective.queue.size:
        objective.queue.enqueue(*features(3, dim=SIZE.embed_dim, seed=6), torch.tensor([1, 7, 8]))
    return objective


@pytest.mark.parametrize("mode, config", [
    ("full", dict(alpha=0.4, queue_size=8, momentum=0.9)),
    ("full", dict(alpha=0.0, queue_size=0)),
    ("prompts", dict(alpha=0.4, queue_size=8, momentum=0.9)),
])
def test_chunked_step_gives_the_full_batch_gradient(tiny_dgl_blip, mode, config):
    """utils/step.py's TrainStep with 3 chunks (``cached_itc``, then each chunk through the objective's forward)
    leaves on every trainable tensor the gradient of the one-chunk step within 1e-6 (float64), and the same loss,
    momentum copy and queue: the momentum keys and the queue are constants of the step."""
    ids, mask, video = batch(size=6)
    video, video_ids = video.double(), torch.tensor([0, 1, 2, 0, 3, 4])
    runs = {}
    for chunks in (1, 3):
        objective = chunked_objective(tiny_dgl_blip, mode, config)
        trained = [p for p in objective.model.parameters() if p.requires_grad]
        step = TrainStep(objective.model, objective, torch.optim.SGD(trained, lr=0.0), "fp32", torch.device("cpu"),
                         chunks=chunks)
        loss = step.objective_backward(ids, mask, video, video_ids, position=(1, 0, 1))  # epoch 1: alpha unramped
        grads = {n: p.grad.clone() for n, p in objective.model.named_parameters() if p.grad is not None}
        runs[chunks] = loss, grads, objective
    (loss, full, whole), (chunked_loss, chunked, cached) = runs[1], runs[3]
    assert abs(chunked_loss - loss) < 1e-9 and set(chunked) == set(full)
    assert set(full) >= {n for n, p in whole.model.named_parameters() if p.requires_grad and "itm_head" not in n
                         and "crossattention" not in n}  # every tensor the ITC reaches has a gradient
    for name, grad in full.items():
        assert (chunked[name] - grad).abs().max() <= 1e-6, name
    assert full["global_prompts"].abs().max() > 1e-3
    assert (mode == "full") == ("blip.temp" in full) and (mode == "prompts" or full["blip.temp"].abs() > 1e-3)
    for a, b in zip(whole.state_dict().values(), cached.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=0)  # the momentum copy and the queue


def test_chunked_step_refuses_itm(tiny_dgl_blip):
    objective = DGLBlipObjective(tiny_dgl_blip(global_prompt_length=2), BlipLossConfig(queue_size=0, alpha=0.0),
                                 enc_id=len(VOCAB) + 1, generator=torch.Generator().manual_seed(0))
    ids, mask, video = batch()
    with pytest.raises(ValueError, match=r"--gradient_accumulation_steps 2 \(chunked encoding\) is exact for the ITC "
                                         "only: .*set --itm_weight 0"):
        objective.cached_itc(ids, mask, video, torch.arange(4), chunks=2)
    assert int(objective.queue.filled) == 0

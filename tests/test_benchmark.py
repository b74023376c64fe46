"""The benchmark harness: its FLOP formula, its naive attention reference, and a tiny end-to-end run."""
import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from models.dgl import POOLED_OUTPUT_TYPES
from models.losses import contrastive_loss
from models.pretrained import expected_clip_keys
from apps.bench.cli import main
from apps.bench.inputs import BLIP_PRESETS, MODEL_PRESETS, build_model, clip_state_dict_shapes, random_captions
from apps.bench.naive import NaiveNet, global_local_mask, naive_encode_video
from apps.bench.sections import trainer_step
from models.blip.flops import dgl_train_step_flops, dgl_video_flops, itm_flops, rerank_flops
from models.blip.losses import BlipLossConfig
from models.flops import Shapes, kept_words, text_flops, video_flops
from models.prompts import PROMPT_GENERATORS
from models.step_flops import prompt_flops, train_step_flops


def tiny_shapes(variant: str = "linear") -> Shapes:
    return Shapes(vision_width=2, vision_layers=1, patch=1, grid=1, text_width=2, text_layers=1, embed=2,
                        frames=2, global_prompts=1, local_prompts=1, text_prompts=2, prompt_layers=1, variant=variant)


def test_flop_formula_by_hand():
    s = tiny_shapes()
    # S = 1 + 1 + 1 = 3 tokens per frame, L = 1 + 2*3 = 7; without the local prompt S' = 2, L' = 5.
    assert (s.tokens_per_frame, s.video_tokens) == (3, 7)
    # The only (so last) block is prompted and its prompts are unread: they are keys and values only, once per
    # call: 4*F*P*D^2 = 4*1*1*4 = 16 (the linear variant's F = 1 set for both frames). It computes the R = G + T = 3
    # pooled rows: keys/values of the L' = 5 other tokens 4*5*4 = 80, queries, out-proj and MLP 20*R*D^2 = 240;
    # pairs G*L + T*(G+S) = 7 + 8 = 15 -> 4*D*15 = 120 attention; stem 2*T*grid^2*3p^2*D = 24; head 2*D*E = 8.
    # Backward: 80 + 240 (input grads only) + 2*120 + head 8 + prompts 16.
    assert video_flops(s) == (16 + 80 + 240 + 120 + 24 + 8, 16 + 80 + 240 + 240 + 8) == (488, 584)
    assert video_flops(s, videos=3) == (3 * 472 + 16, 3 * 568 + 16)  # the prompts' share once per call
    # The transformer variant has one prompt set per frame: F = T = 2.
    assert video_flops(dataclasses.replace(s, variant="transformer", local_prompt_sets=2)) == (488 + 16, 584 + 16)
    # Two prompted layers: layer 0's prompts are replaced by layer 1's, so layer 0 has the L' = 5 rows:
    # 24*5*4 = 480 GEMM + pairs T*S'*(G+S) + G*L = 2*2*4 + 7 = 23 -> 4*2*23 = 184 (backward 480 + 368), + 16 prompts.
    two = dataclasses.replace(s, vision_layers=2, prompt_layers=2)
    assert video_flops(two) == (488 + 480 + 184 + 16, 584 + 480 + 368 + 16)
    # Three layers, two prompted: layer 0 as above; layer 1's prompts carry on, so it has all L = 7 rows:
    # 24*7*4 = 672 + 4*2*31 = 248 (pairs 2*3*4 + 7 = 31; backward 672 + 496); the last block's keys/values
    # then come from all 7 rows: 4*7*4 = 112 instead of 80; only layer 0's prompts are keys/values only (16, as in 488).
    three = dataclasses.replace(s, vision_layers=3, prompt_layers=2)
    assert video_flops(three) == (488 + 480 + 184 + 672 + 248 + 32, 584 + 480 + 368 + 672 + 496 + 32)
    # One prompted layer of two: layer 0's prompts carry on (all rows), nothing is fixed.
    assert video_flops(dataclasses.replace(s, vision_layers=2)) == (472 + 32 + 920, 568 + 32 + 1168)
    # Text with 3 id slots kept: W = 2 word slots after SOT, head H = SOT + 1 prefix prompt = 2, once per call.
    # Words: 24*W*D^2 = 192 + 4*D*W*(H+W) = 64; backward 192 - 6*W*D^2 = 48 (layer 0's Q/K/V of the frozen word
    # embeddings get no gradient) + 2*64. Head (the last layer: none of its rows is read again): keys/values
    # 4*H*D^2 = 32 both ways; projection 2*D*E = 8.
    assert text_flops(s, 1, 3) == (192 + 64 + 32 + 8, 192 - 48 + 128 + 32 + 8) == (296, 312)
    # Two text layers, both prompted: layer 0's head computes only SOT's row (its prompts are replaced), which
    # sees only its own key: 32 + 20*D^2 = 80 + 4*D*1*1 = 8 (backward 32 + 80 + 16); layer 1 as above.
    two_text = dataclasses.replace(s, text_layers=2, prompt_layers=2)
    assert text_flops(two_text, 1, 3) == (296 + 256 + 120, 312 + 320 + 128)
    # ... with one prompted layer, layer 0's prefix rows carry on: all H = 2 head rows, 2*2 pairs (160 + 4*D*4 = 32).
    assert text_flops(dataclasses.replace(two_text, prompt_layers=1), 1, 3) == (296 + 256 + 224, 312 + 320 + 256)
    # linear prompt maps: 2 maps * NL * P_local * 2*D_v*D_t = 16; trainable: backward 2x
    assert prompt_flops(s) == (16, 32)
    flops = train_step_flops(s, batch=1, kept=3)
    assert flops["logits"] == 2 * 2 + 4 * 2
    assert flops["total"] == 488 + 584 + 296 + 312 + 16 + 32 + 12


def test_b32_shapes():
    cfg = MODEL_PRESETS["B/32"]
    assert list(clip_state_dict_shapes(cfg)) == expected_clip_keys(cfg)
    shapes = clip_state_dict_shapes(cfg)
    assert sum(int(torch.Size(s).numel()) for s in shapes.values()) == 151_277_313  # spec §1.1
    assert MODEL_PRESETS["B/16"].grid_size == 14


@pytest.mark.parametrize("variant", ["transformer", "linear"])
def test_gemm_count_matches_torch_flop_counter(variant):
    """Without the fused attention products (no CPU formula in the counter) the count is exact, backward included."""
    model = build_model("tiny", variant, frames=3)
    shapes = Shapes.of(model, 3)
    ids, video = random_captions(2, 512), torch.randn(2, 3, 3, 32, 32)
    with FlopCounterMode(display=False) as counter:
        text, vid = model(ids, video)
        contrastive_loss(model.logits(text, vid)).backward()
    expected = train_step_flops(shapes, 2, kept_words(ids), attention=False)["total"]
    assert counter.get_total_flops() == expected


@pytest.mark.parametrize("variant", ["transformer", "linear"])
def test_naive_attention_matches_model(variant):
    torch.manual_seed(0)
    model = build_model("tiny", variant, frames=3).eval()
    video = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        prompts = model.prompts()
        for output_type in POOLED_OUTPUT_TYPES + ("global-local-feature",):
            ours = model.encode_video(video, prompts, output_type=output_type)
            naive = naive_encode_video(model, video, prompts, output_type=output_type)
            torch.testing.assert_close(naive, ours, atol=1e-5, rtol=0)


def test_mask_layout():
    mask = global_local_mask(num_global=1, frames=2, tokens_per_frame=2)
    assert mask.tolist() == [
        [True, True, True, True, True],
        [True, True, True, False, False],
        [True, True, True, False, False],
        [True, False, False, True, True],
        [True, False, False, True, True],
    ]


def test_quick_run_tiny(capsys, tmp_path):
    out = tmp_path / "bench.json"
    argv = ["--models", "tiny", "--frames", "2", "--batch_size", "2", "--eval_video_batch", "2", "--eval_text_batch", "4",
            "--repeats", "1", "--warmup", "0", "--naive", "--in_process", "--device", "cpu", "--json_out", str(out),
            "--sections", "train,video,text,data"]  # loader and eval: tests/test_bench_data_eval.py
    main(argv)
    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    assert json.loads(out.read_text()) == report
    assert [c["variant"] for c in report["configs"]] == ["transformer", "linear"]
    for cfg in report["configs"]:
        assert set(cfg["sections"]) == {"train_step", "train_step_naive", "encode_video", "encode_video_naive", "encode_text"}
        for stats in cfg["sections"].values():
            assert stats["gflop"] > 0 and stats["items_per_s"] > 0
            assert 0 < stats["efficiency"] <= 1.0 or (stats["efficiency"] is None and "under-measured" in stats["efficiency_flag"])
            assert stats["matmul_gflop_per_s"] == max(stats["matmul_samples_gflop_per_s"]) or stats["matmul_gflop_per_s"] > 0
        assert cfg["sections"]["train_step"]["peak_mem_mb"] >= 0
    assert "skipped" in report["data"] or "runs" in report["data"]
    table = "\n".join(lines[:-1])
    assert "train_step" in table and "encode_text" in table and "data loading" in table


def test_isolated_worker(capsys):
    """The default path: each configuration in a fresh subprocess, memory measured there."""
    report = main(["--models", "tiny", "--variants", "linear", "--frames", "2", "--batch_size", "1",
                         "--sections", "train", "--repeats", "1", "--warmup", "0", "--device", "cpu"])
    (cfg,) = report["configs"]
    assert "error" not in cfg and cfg["sections"]["train_step"]["peak_mem_mb"] > 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["configs"][0]["variant"] == "linear"


@pytest.mark.parametrize("variant", sorted(PROMPT_GENERATORS))
def test_prompt_generator_flops_match_torch_flop_counter(variant):
    """Each registered generator's count against the counter on the generator alone (forward; backward 2x)."""
    model = build_model("tiny", variant, frames=3)
    ccfg, cfg = model.clip.config, model.config
    with FlopCounterMode(display=False) as forward:
        prompts = model.prompts()
    with FlopCounterMode(display=False) as backward:
        (prompts.text.sum() + prompts.local.sum()).backward()
    count = PROMPT_GENERATORS[variant].flops(ccfg.vision_width, ccfg.text_width, model.prompt_layers,
                                            cfg.text_prompt_length, cfg.local_prompt_length, 3, attention=False)
    assert forward.get_total_flops() == count > 0
    assert prompt_flops(Shapes.of(model, 3), attention=False) == (count, backward.get_total_flops())


def test_unknown_prompt_generator_is_refused():
    with pytest.raises(ValueError, match="no FLOP count for prompt generator 'mlp'.*linear"):
        prompt_flops(tiny_shapes(variant="mlp"))


@pytest.mark.parametrize("variant", ["transformer", "linear"])
def test_naive_training_step_is_the_trainer_step(variant):
    """The benchmark's naive training row runs the trainer's step with the masked-attention forward: same update."""
    torch.manual_seed(0)
    model = build_model("tiny", variant, frames=3)
    naive_model = copy.deepcopy(model)
    ids, video = random_captions(4, 512), torch.randn(4, 3, 3, 32, 32)
    cpu = torch.device("cpu")
    loss, grad_norm = trainer_step(model, "fp32", cpu)(ids, video)
    naive_loss, naive_grad_norm = trainer_step(naive_model, "fp32", cpu, NaiveNet(naive_model))(ids, video)
    torch.testing.assert_close(naive_loss, loss, atol=1e-5, rtol=0)
    torch.testing.assert_close(naive_grad_norm, grad_norm, atol=1e-5, rtol=1e-5)
    before = build_model("tiny", variant, frames=3).trainable_parameters()
    # The global prompts reach the loss through the video encoder only: the naive forward's gradient arrived.
    assert not torch.equal(naive_model.global_prompts, before["global_prompts"])
    for name, param in model.trainable_parameters().items():
        torch.testing.assert_close(naive_model.trainable_parameters()[name], param, atol=1e-6, rtol=0)


@pytest.mark.parametrize("module", ["apps.bench", "apps.benchmark"])
def test_both_module_names_run(module):
    """``python -m apps.bench`` and the earlier ``python -m apps.benchmark`` (scripts of older checkouts)."""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=root, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "--quick" in result.stdout and "--in_process" in result.stdout


def test_data_section_times_the_given_data_set(tmp_path):
    """``--features_path`` with the dataset flags: one row per worker count with its videos/s."""
    from argparse import Namespace

    from apps.bench.loader import data_section
    from tests.layouts import make_msrvtt

    cfg = make_msrvtt(tmp_path)
    args = Namespace(features_path=str(cfg.features_path), frame_cache=None, datatype="msrvtt", data_path=str(cfg.data_path),
                     train_csv=str(cfg.train_csv), val_csv=str(cfg.val_csv), video_backend=None, frames=4,
                     data_subset="train", num_workers=[0], batch_size=1, loader_batches=2)
    runs = data_section(args)["runs"]
    assert [(r["source"], r["num_workers"], r["videos"]) for r in runs] == [("videos", 0, 2)]
    assert runs[0]["videos_per_s"] > 0
    assert "skipped" in data_section(Namespace(**{**vars(args), "features_path": None}))


def test_blip_rows_tiny(capsys):
    """DGL-BLIP's rows at tiny size (both training modes, with and without checkpointing): the recipe's training
    step, encoding and the re-rank stage, with FLOPs from models/blip/flops.py and the stage scaled by pairs."""
    argv = ["--models", "blip-tiny", "--frames", "2", "--batch_size", "2", "--eval_video_batch", "2",
            "--eval_text_batch", "4", "--repeats", "1", "--warmup", "0", "--in_process", "--device", "cpu",
            "--sections", "train,video,text,rerank", "--rerank_k", "4,5000", "--grad_checkpointing", "both"]
    report = main(argv)
    table = capsys.readouterr().out
    cfg, loss = BLIP_PRESETS["blip-tiny"], BlipLossConfig()
    assert [(c["variant"], c["grad_checkpointing"]) for c in report["configs"]] == [
        ("full", False), ("full", True), ("prompts", False), ("prompts", True)]
    for c in report["configs"]:
        rows = c["sections"]
        assert set(rows) == {"train_step", "encode_video", "encode_text", "itm_rerank_k4", "itm_rerank_k1000"}
        for stats in rows.values():
            assert stats["items_per_s"] > 0 and (0 < stats["efficiency"] <= 1.0 or stats["efficiency"] is None)
        # 4 globals (DGL's default) + 2 frames of 17 tokens; captions of 32 id slots; a full queue.
        step = dgl_train_step_flops(cfg, 2, 32, 2, 4, 1, c["variant"], loss, loss.queue_size)
        assert c["train_flops"] == step and rows["train_step"]["gflop"] == step["total"] / 1e9
        assert rows["encode_video"]["gflop"] == dgl_video_flops(cfg, 2, 4, videos=2)[0] / 1e9
        for k in (4, 1000):  # K beyond the 1,000-video gallery re-scores all of it
            stats = rows[f"itm_rerank_k{k}"]
            assert stats["batch"] == k and stats["gflop"] == itm_flops(cfg, k, 32, memory=38)[0] / 1e9
            assert stats["stage"]["pairs"] == 2000 * k
            assert stats["stage"]["tflop"] == rerank_flops(cfg, 1000, 1000, k, 32, 38) / 1e12
            assert stats["stage"]["scaled_from_sample_s"] == pytest.approx(stats["median_s"] * 2000)
    assert "SCALED from the 4 timed pairs" in table and "blip-tiny prompts" in table
    with pytest.raises(ValueError, match="--variants linear names none of blip-tiny's: full,prompts"):
        main(argv + ["--variants", "linear"])

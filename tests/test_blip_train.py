"""DGL-BLIP (``--model dgl_blip``) through main.py on a tiny random BLIP folder and an MSR-VTT layout whose six
training videos have one caption each, in the words of tests/blip_files.py's vocabulary: both training modes
lower the loss and resume exactly (momentum copy, queue and the ITM generator included), evaluation with
``--itm_rerank`` reports both rankings, and the flags DGL-BLIP cannot run are refused in one line."""
import csv
import json

from pathlib import Path

import pytest
import torch

import retrieve
import visualize
from dataloaders.frames import read_eval_frames
from models.backbones import get_tokenizer
from models.checkpoint import read_checkpoint
from models.factory import load_dgl
from tests.blip_files import SIZE, TEST_PAIRS, make_pairs_msrvtt, write_hf_folder
from tests.test_train import torchrun
from utils.config import build_config
from utils.run import run

pytestmark = pytest.mark.filterwarnings("ignore::models.blip.BlipTemperatureWarning")
MODES = {"full": ["--freeze_clip", "0", "--lr", "1e-3", "--coef_lr", "1"], "prompts": ["--lr", "3e-2"]}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Six videos, one caption each, for training and testing alike; a random transformers BLIP folder."""
    root = tmp_path_factory.mktemp("blip_train")
    cfg = make_pairs_msrvtt(root / "data")
    with open(cfg.train_csv, "w", newline="") as f:
        csv.writer(f).writerows([["video_id"], *([v] for v in TEST_PAIRS)])
    sentences = [{"video_id": v, "caption": c, "sen_id": 0} for v, c in TEST_PAIRS.items()]
    cfg.data_path.write_text(json.dumps({"videos": [{"video_id": v} for v in TEST_PAIRS], "sentences": sentences}))
    write_hf_folder(root / "blip", SIZE)
    return root, cfg


def flags(workspace, out: str, *extra: str) -> list[str]:
    root, cfg = workspace
    return ["--do_train", "1", "--datatype", "msrvtt", "--backbone", "blip", "--model", "dgl_blip",
            "--pretrained_clip_name", str(root / "blip"), "--train_csv", str(cfg.train_csv),
            "--val_csv", str(cfg.val_csv), "--data_path", str(cfg.data_path), "--features_path", str(cfg.features_path),
            "--max_words", "16", "--max_frames", "4", "--num_thread_reader", "0", "--batch_size_val", "6",
            "--eval_every_epoch", "0", "--n_display", "1", "--warmup_proportion", "0", "--output_dir", str(root / out),
            *extra]


def logged_losses(folder) -> list[float]:
    records = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


@pytest.mark.parametrize("mode", MODES)
def test_training_lowers_the_loss(workspace, mode):
    """The whole training set in each batch, no queue (its growing key set would raise the ITC by itself): the
    loss of the last of 12 steps is well below the first's."""
    run(build_config(flags(workspace, f"lowers_{mode}", "--batch_size", "6", "--epochs", "12", "--queue_size", "0",
                           "--alpha", "0", *MODES[mode])))
    losses = logged_losses(workspace[0] / f"lowers_{mode}")
    assert len(losses) == 12
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("mode", MODES)
def test_resume_after_an_epoch_equals_the_uninterrupted_run(workspace, mode):
    """Momentum distillation, a queue that wraps and ITM negatives drawn in every step: stopped after epoch 1
    and resumed, the weights, the momentum copy, the queue and the ITM generator equal a run that never stopped."""
    common = ["--batch_size", "3", "--epochs", "2", "--queue_size", "9", "--alpha", "0.4", "--momentum", "0.9",
              *MODES[mode]]
    run(build_config(flags(workspace, f"whole_{mode}", *common)))
    run(build_config(flags(workspace, f"stopped_{mode}", *common, "--max_steps", "2")))
    stopped = workspace[0] / f"stopped_{mode}" / "checkpoint_latest.pt"
    first = read_checkpoint(stopped)
    assert (first["epoch"], first["batch_in_epoch"]) == (0, 2)
    run(build_config(flags(workspace, f"stopped_{mode}", *common, "--resume", str(stopped))))
    whole = read_checkpoint(workspace[0] / f"whole_{mode}" / "checkpoint_latest.pt")
    resumed = read_checkpoint(stopped)
    assert resumed["global_step"] == whole["global_step"] == 4
    trained = whole["state_dict"]
    assert ("net.blip.visual.cls_token" in trained) == (mode == "full") and "net.global_prompts" in trained
    for name in trained:
        assert torch.equal(resumed["state_dict"][name], trained[name]), name
        assert not torch.equal(first["state_dict"][name], trained[name]) or "itm_head" in name, name
    for part in ("momentum", "queue"):
        for name, value in whole["objective"][part].items():
            assert torch.equal(resumed["objective"][part][name], value), (part, name)
    assert int(whole["objective"]["queue"]["filled"]) == 9 and int(whole["objective"]["queue"]["ptr"]) == 3
    assert torch.equal(resumed["rng"][0]["itm_generator"], whole["rng"][0]["itm_generator"])


ITC_ONLY = ["--epochs", "2", "--queue_size", "9", "--alpha", "0.4", "--momentum", "0.9", "--itm_weight", "0",
            *MODES["full"]]


@pytest.fixture(scope="module")
def itc_only_run(workspace):
    """One process, the global batch of 6, ITC with momentum distillation and the queue: the reference run."""
    run(build_config(flags(workspace, "ddp_single", "--batch_size", "6", *ITC_ONLY)))
    return read_checkpoint(workspace[0] / "ddp_single" / "checkpoint_latest.pt")


def assert_same_training(one: dict, two: dict) -> None:
    assert one["global_step"] == two["global_step"] == 2
    for name, value in one["state_dict"].items():
        torch.testing.assert_close(two["state_dict"][name], value, atol=2e-6, rtol=0, msg=name)
    for name, value in one["objective"]["queue"].items():
        torch.testing.assert_close(two["objective"]["queue"][name], value, atol=2e-6, rtol=0, msg=name)
    assert (int(two["objective"]["queue"]["filled"]), int(two["objective"]["queue"]["ptr"])) == (9, 3)  # wrapped


def test_two_ranks_train_as_one_process_without_itm(workspace, itc_only_run):
    """ITC with momentum distillation and the queue over the gathered batch: 2 gloo ranks of 3 (DDP around the
    objective, the unused ITM head allowed) take the steps of one process on the global batch of 6."""
    torchrun(2, flags(workspace, "ddp_two", "--batch_size", "3", *ITC_ONLY))
    assert_same_training(itc_only_run, read_checkpoint(workspace[0] / "ddp_two" / "checkpoint_latest.pt"))


def test_chunked_batches_train_as_whole_ones_without_itm(workspace, itc_only_run):
    """--gradient_accumulation_steps 3 (gradient caching of the ITC, momentum keys and queue once per step): one
    process in chunks of 2, and 2 gloo ranks in chunks of 1 (DDP synchronising the last chunk only), take the
    steps of the unchunked process."""
    run(build_config(flags(workspace, "chunked_single", "--batch_size", "6", "--gradient_accumulation_steps", "3",
                           *ITC_ONLY)))
    assert_same_training(itc_only_run, read_checkpoint(workspace[0] / "chunked_single" / "checkpoint_latest.pt"))
    torchrun(2, flags(workspace, "chunked_two", "--batch_size", "3", "--gradient_accumulation_steps", "3", *ITC_ONLY))
    assert_same_training(itc_only_run, read_checkpoint(workspace[0] / "chunked_two" / "checkpoint_latest.pt"))


ITC, RERANKED = "DGL-BLIP ITC", "DGL-BLIP ITC + ITM re-rank of the top 4"


@pytest.fixture(scope="module")
def fine_tuned(workspace):
    """A full fine-tuning run of one epoch at 40 px frames (BLIP's 32 px positions interpolated, as the recipe
    runs 384 px weights at 224), evaluated with --itm_rerank 4 at its end; its folder."""
    run(build_config(flags(workspace, "rerank", "--batch_size", "3", "--epochs", "1", "--do_eval", "1",
                           "--itm_rerank", "4", "--image_resolution", "40", *MODES["full"])))
    return workspace[0] / "rerank"


def evaluation_flags(workspace, out: str, checkpoint: Path) -> list[str]:
    return flags(workspace, out, "--do_train", "0", "--do_eval", "1", "--itm_rerank", "4", "--freeze_clip", "0",
                 "--image_resolution", "40", "--resume", str(checkpoint))


def test_evaluation_reports_itc_and_itm_reranked_tables(fine_tuned, workspace, capfd):
    """An evaluation of the checkpoint prints both rows and writes what the training run's final evaluation did."""
    run(build_config(evaluation_flags(workspace, "eval_only", fine_tuned / "checkpoint_latest.pt")))
    printed = capfd.readouterr().out
    metrics = json.loads((fine_tuned.parent / "eval_only" / "eval_metrics.json").read_text())
    assert list(metrics)[:2] == [ITC, RERANKED]
    at_training_end = json.loads((fine_tuned / "eval_metrics.json").read_text())
    assert metrics == {**at_training_end, "checkpoint": metrics["checkpoint"]}
    for label in (ITC, RERANKED):
        assert set(metrics[label]) == {"t2v", "v2t"}
        assert f"| {label} " in printed  # both rows of the printed table


def test_two_ranks_rerank_as_one_process(fine_tuned, workspace):
    """Encoding, video tokens and the re-ranked queries split over 2 gloo ranks give the one-process metrics."""
    out = workspace[0] / "eval_two_ranks"
    torchrun(2, evaluation_flags(workspace, "eval_two_ranks", fine_tuned / "checkpoint_latest.pt"))
    two = json.loads((out / "eval_metrics.json").read_text())
    one = json.loads((fine_tuned / "eval_metrics.json").read_text())
    for label in (ITC, RERANKED):
        for direction in ("t2v", "v2t"):
            assert two[label][direction] == pytest.approx(one[label][direction]), (label, direction)


def test_retrieve_indexes_and_searches_with_a_dgl_blip_checkpoint(fine_tuned, workspace, tmp_path, capsys):
    """retrieve.py rebuilds DGL-BLIP (fine-tuned BLIP included) from the checkpoint and ranks by ITC cosine."""
    cfg = workspace[1]
    ckpt, index = fine_tuned / "checkpoint_latest.pt", tmp_path / "index"
    assert retrieve.main(["index", "--videos", str(cfg.features_path), "--checkpoint", str(ckpt), "--out", str(index),
                          "--workers", "0", "--device", "cpu", "--quiet"]) == 0
    query = TEST_PAIRS["video3"]
    capsys.readouterr()
    assert retrieve.main(["search", "--index", str(index), query, "--top_k", "6", "--json", "--device", "cpu",
                          "--max_words", "16"]) == 0
    answer = json.loads(capsys.readouterr().out)["queries"][0]["results"]
    model = load_dgl(ckpt).eval()
    assert model.config.model == "dgl_blip" and model.config.train_backbone
    assert model.clip.config.image_resolution == 40  # rebuilt at the size it was trained at
    paths = sorted(cfg.features_path.glob("*.mp4"))
    with torch.no_grad():
        video = torch.cat([model.encode_video(read_eval_frames(p, 4, 40)[0][None]) for p in paths])
        scores = model.encode_text(get_tokenizer("blip", model.clip)([query], 16)[0])[0] @ video.t()
    values, order = scores.sort(descending=True)
    assert [Path(r["path"]).name for r in answer] == [paths[j].name for j in order]
    assert [r["score"] for r in answer] == pytest.approx(values.tolist(), abs=1e-4)


def test_visualize_refuses_a_dgl_blip_checkpoint(fine_tuned, workspace, tmp_path, capsys):
    video = next(workspace[1].features_path.glob("*.mp4"))
    assert visualize.main(["--checkpoint", str(fine_tuned / "checkpoint_latest.pt"), "--video", str(video),
                           "--out", str(tmp_path / "map.png"), "--device", "cpu"]) == 2
    error = capsys.readouterr().err.strip()
    assert "a --model dgl_blip checkpoint; visualize.py draws the attention of --model dgl only" in error
    assert len(error.splitlines()) == 1 and not (tmp_path / "map.png").exists()


@pytest.mark.parametrize("extra, message", [
    (["--gradient_accumulation_steps", "2"],
     "--gradient_accumulation_steps 2 (chunked encoding) is exact for the ITC only"),
    (["--shared_latent_space", "linear"], "--shared_latent_space does not apply to --model dgl_blip"),
    (["--visual_output_type", "average_global_prompt"], "--model dgl_blip pools with --visual_output_type"),
    (["--alpha", "1.5"], "--alpha 1.5: must be <= 1"),
    (["--do_train", "0", "--do_eval", "1", "--baseline", "meanp", "--itm_rerank", "4"],
     "--itm_rerank re-ranks with DGL-BLIP's ITM head: drop it with --baseline"),
])
def test_flags_dgl_blip_cannot_run_are_refused_in_one_line(workspace, extra, message):
    with pytest.raises(SystemExit) as err:
        build_config(flags(workspace, "refused", *extra))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_blip_flags_are_refused_for_dgl(workspace):
    args = [a for a in flags(workspace, "refused", "--itm_rerank", "4") if a not in ("--model", "dgl_blip")]
    with pytest.raises(SystemExit, match="--itm_rerank does not apply to --model dgl"):
        build_config(args)
    blip_on_clip = [*flags(workspace, "refused")]
    blip_on_clip[blip_on_clip.index("blip")] = "openai-clip"
    with pytest.raises(SystemExit, match="--model dgl_blip runs on BLIP: pass --backbone blip"):
        build_config(blip_on_clip)

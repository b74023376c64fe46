"""Bad settings and reused output folders: refused with a message naming the flag or file, nothing lost."""
import hashlib
import json
import math

import pytest
import torch

from models.checkpoint import CheckpointError
from tests.tiny_runs import train_flags
from utils.config import build_config
from utils.run import run


OUT_OF_RANGE = [  # flag, value, what the one-line error says after "<flag> <value>: "
    ("--batch_size", "0", "must be >= 1"), ("--gradient_accumulation_steps", "0", "must be >= 1"),
    ("--train_group_size", "0", "must be >= 1"), ("--n_display", "0", "must be >= 1"), ("--epochs", "0", "must be >= 1"),
    ("--epochs", "-3", "must be >= 1"), ("--max_steps", "0", "must be >= 1"), ("--warmup_proportion", "2", "must be <= 1"),
    ("--clip_grad_norm", "-1", "must be > 0 (pass inf to disable clipping)"), ("--lr", "nan", "must be a number"),
    ("--beta2", "1", "must be < 1"), ("--dist_timeout", "0", "must be > 0"),
    ("--max_words", "100", "must be <= 77 (the backbone's text context length, SOT and EOT included)"),
    ("--lr", "2", "must be <= 1"), ("--lr", "1e+39", "must be <= 1"),
]


@pytest.mark.parametrize("flag, value, rule", OUT_OF_RANGE)
def test_out_of_range_flag_is_one_line_naming_it(flag, value, rule):
    with pytest.raises(SystemExit) as err:
        build_config(["--do_train", "1", "--output_dir", "unused", flag, value])
    assert str(err.value) == f"{flag} {value}: {rule}"


def test_accumulation_must_divide_the_batch():
    with pytest.raises(SystemExit, match="--batch_size 6 must be divisible by --gradient_accumulation_steps 4"):
        build_config(["--do_train", "1", "--output_dir", "unused", "--batch_size", "6", "--gradient_accumulation_steps", "4"])


def test_infinite_clip_grad_norm_disables_clipping():
    assert build_config(["--do_eval", "1", "--output_dir", "unused", "--clip_grad_norm", "inf"]).train.clip_grad_norm == math.inf


def lr_at(step: int, base: float, total: int, warmup: float = 0.1, floor: float = 1e-8) -> float:
    """The documented warm-up + cosine schedule, written out independently of utils/optim.py."""
    w = warmup * total
    if step < w:
        return max(floor + step / w * (base - floor), floor)
    return max(0.5 * base * (1 + math.cos(math.pi * (step - w) / (total - w))), floor)


def test_resume_with_other_settings_is_refused_listing_each(workspace):
    out = workspace / "settings"
    run(build_config(train_flags(workspace, "settings", "--max_steps", "2")))
    ckpt = out / "checkpoint_latest.pt"
    before = {name: (out / name).read_bytes() for name in ("checkpoint_latest.pt", "train_log.jsonl", "config.json")}
    with pytest.raises(SystemExit) as err:
        run(build_config(train_flags(workspace, "settings", "--resume", str(ckpt), "--epochs", "3", "--lr", "2e-3",
                                   "--batch_size", "4")))
    message = str(err.value)
    assert str(ckpt) in message and "--resume_with_new_settings" in message
    for line in ("--epochs: 2 -> 3", "--lr: 0.001 -> 0.002", "global batch (--batch_size x ranks): 8 x 1 -> 4 x 1"):
        assert line in message
    assert {name: (out / name).read_bytes() for name in before} == before  # refused before writing anything


def test_resume_from_a_damaged_checkpoint_names_it(workspace):
    run(build_config(train_flags(workspace, "damaged", "--max_steps", "1")))
    ckpt = workspace / "damaged" / "checkpoint_latest.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"^{ckpt}: truncated or damaged"):
        run(build_config(train_flags(workspace, "damaged", "--resume", str(ckpt))))


def test_resume_with_new_settings_recomputes_the_schedule(workspace):
    out = workspace / "newsched"
    run(build_config(train_flags(workspace, "newsched", "--max_steps", "2")))
    ckpt = out / "checkpoint_latest.pt"
    # 32 training pairs / global batch 8 = 4 batches per epoch; 2 done. With batch 4: 8 per epoch, 4 done.
    run(build_config(train_flags(workspace, "newsched", "--resume", str(ckpt), "--epochs", "3", "--batch_size", "4",
                               "--lr", "2e-3", "--max_steps", "5", "--resume_with_new_settings")))
    steps = [r for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()) if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 5]  # resumed at step 4 of 24 (not at step 2 of 8)
    assert steps[-1]["lr"] == pytest.approx(lr_at(4, 2e-3, 24), rel=1e-9)
    assert "schedule recomputed: step 2 of 8 becomes step 4 of 24" in (out / "log.txt").read_text()
    assert torch.load(ckpt, weights_only=False)["global_step"] == 5


def test_resume_below_the_finished_epochs_is_refused(workspace):
    out = workspace / "finished"
    run(build_config(train_flags(workspace, "finished", "--epochs", "1")))
    ckpt = out / "checkpoint_latest.pt"
    before = ckpt.read_bytes()
    with pytest.raises(SystemExit, match="--epochs: 1 -> 3"):  # more epochs is a schedule change
        run(build_config(train_flags(workspace, "finished", "--resume", str(ckpt), "--epochs", "3")))
    with pytest.raises(SystemExit, match=r"--epochs 1: .*checkpoint_latest.pt has already finished 1 epochs"):
        run(build_config(train_flags(workspace, "finished", "--resume", str(ckpt), "--epochs", "1")))
    assert ckpt.read_bytes() == before


def test_new_run_into_a_used_output_dir_is_refused_and_logs_keep_both_runs(workspace):
    out = workspace / "reused"
    run(build_config(train_flags(workspace, "reused", "--max_steps", "1")))
    ckpt = out / "checkpoint_latest.pt"
    before, log_before = ckpt.read_bytes(), (out / "train_log.jsonl").read_text()
    stale = out / ".checkpoint_latest.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    with pytest.raises(SystemExit) as err:
        run(build_config(train_flags(workspace, "reused", "--max_steps", "1")))
    assert f"--output_dir {out}" in str(err.value) and "--overwrite" in str(err.value)
    assert ckpt.read_bytes() == before and (out / "train_log.jsonl").read_text() == log_before and stale.exists()
    run(build_config(train_flags(workspace, "reused", "--max_steps", "1", "--overwrite")))
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [("run_start" in r, r.get("step")) for r in records] == [(True, None), (False, 1), (True, None), (False, 1)]
    assert not stale.exists()
    assert f"removed {stale}" in (out / "log.txt").read_text()



def test_overwrite_moves_the_previous_runs_outputs_aside_nothing_lost(workspace):
    """A new run with --overwrite (here without evaluation) leaves no checkpoint_best.pt or eval_metrics of the
    run before beside its own files: they are moved into previous_runs/<date-time>/, byte for byte."""
    out = workspace / "overwritten"
    run(build_config(train_flags(workspace, "overwritten", "--epochs", "1", "--eval_every_epoch", "1", "--do_eval", "1")))
    old = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name not in ("log.txt", "train_log.jsonl")}
    assert {"checkpoint_best.pt", "checkpoint_latest.pt", "eval_metrics.json", "eval_metrics_epoch1.json", "config.json"} <= set(old)
    run(build_config(train_flags(workspace, "overwritten", "--max_steps", "1", "--overwrite")))
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["checkpoint_latest.pt", "config.json", "log.txt", "train_log.jsonl", "train_state.json"]
    (aside,) = (out / "previous_runs").iterdir()
    assert {p.name: p.read_bytes() for p in aside.iterdir() if p.is_file()} == old
    assert "moved the previous run's checkpoint_best.pt, checkpoint_latest.pt, config.json, eval_metrics.json" in (out / "log.txt").read_text()
    assert torch.load(out / "checkpoint_latest.pt", weights_only=False)["global_step"] == 1



def test_max_words_up_to_the_context_length_is_accepted_and_encodes(workspace):
    """77 words fill CLIP's context exactly (DGL's text prompts take no positions): a caption that long encodes."""
    from models.clip import CLIP
    from models.dgl import DGL
    from models.tokenizer import ClipTokenizer
    from tests.tiny_runs import TINY

    cfg = build_config(train_flags(workspace, "context", "--max_words", "77"))
    model = DGL(CLIP(TINY), cfg.model)
    ids, _ = ClipTokenizer()(["word " * 200], cfg.data.max_words)
    assert ids.shape == (1, 77) and model.encode_text(ids).shape == (1, TINY.embed_dim)
    with pytest.raises(Exception, match="size"):  # what --max_words 78 did at the first long caption
        model.encode_text(ClipTokenizer()(["word " * 200], 78)[0])


def test_nan_in_a_resumed_optimiser_state_is_refused_at_load_naming_the_tensor(workspace):
    out = workspace / "nan_optimiser"
    run(build_config(train_flags(workspace, "nan_optimiser", "--max_steps", "1")))
    ckpt_path = out / "checkpoint_latest.pt"
    ckpt = torch.load(ckpt_path, weights_only=False)
    shapes = {name: tuple(value.shape) for name, value in ckpt["state_dict"].items()}
    # A parameter whose shape no other trainable tensor has: its name follows from the moment's shape alone.
    pid, moments = next((i, s) for i, s in ckpt["optimizer"]["state"].items()
                        if list(shapes.values()).count(tuple(s["exp_avg_sq"].shape)) == 1)
    name = next(n for n, shape in shapes.items() if shape == tuple(moments["exp_avg_sq"].shape))
    moments["exp_avg_sq"].view(-1)[0] = float("nan")
    torch.save(ckpt, ckpt_path)
    before = ckpt_path.read_bytes()
    with pytest.raises(CheckpointError, match=rf"^{ckpt_path}: non-finite \(NaN or inf\) values in the optimiser state: "
                                              rf"\['exp_avg_sq of {name}'\]; use an earlier checkpoint"):
        run(build_config(train_flags(workspace, "nan_optimiser", "--max_steps", "2", "--resume", str(ckpt_path))))
    assert ckpt_path.read_bytes() == before


def test_evaluation_only_run_writes_its_own_config_and_metrics_naming_the_checkpoint(workspace, monkeypatch):
    out = workspace / "evaluated"
    run(build_config(train_flags(workspace, "evaluated", "--max_steps", "1", "--do_eval", "1")))
    training = {name: (out / name).read_bytes() for name in ("config.json", "eval_metrics.json")}
    assert json.loads(training["eval_metrics.json"])["checkpoint"]["model"] == "this training run's at the end of training"
    ckpt = out / "checkpoint_latest.pt"
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    eval_only = train_flags(workspace, "evaluated", "--do_train", "0", "--do_eval", "1", "--resume", str(ckpt))
    results = run(build_config(eval_only))
    assert {name: (out / name).read_bytes() for name in training} == training  # the training run's files untouched
    tag = f"checkpoint_latest-{digest[:8]}"
    assert json.loads((out / f"eval_config_{tag}.json").read_text())["args"]["resume"] == str(ckpt)
    metrics = json.loads((out / f"eval_metrics_{tag}.json").read_text())
    assert metrics == results and metrics["checkpoint"] == {"path": str(ckpt.resolve()), "sha256": digest}
    # Interrupted (Ctrl-C) while encoding: still nothing of the training run replaced.
    monkeypatch.setattr("utils.run.encode_split", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        run(build_config(eval_only))
    assert {name: (out / name).read_bytes() for name in training} == training
    monkeypatch.undo()
    # Into a folder of its own: the plain metrics name, still no config.json.
    fresh = workspace / "evaluated_alone"
    results = run(build_config(train_flags(workspace, "evaluated_alone", "--do_train", "0", "--do_eval", "1", "--resume", str(ckpt))))
    assert sorted(p.name for p in fresh.iterdir()) == [f"eval_config_{tag}.json", "eval_metrics.json", "log.txt"]
    assert json.loads((fresh / "eval_metrics.json").read_text()) == results
    assert list(results)[-1] == "checkpoint"  # after the results, which readers take as the first entry


def test_evaluation_only_run_again_moves_the_earlier_evaluations_files_aside(workspace):
    """Evaluating into a folder that holds an earlier evaluation's metrics, features and config (here of another
    checkpoint) keeps them, byte for byte, in previous_runs/<date-time>/ and logs it; the new files are its own."""
    first, second = workspace / "first", workspace / "second"
    run(build_config(train_flags(workspace, "first", "--max_steps", "1")))
    run(build_config(train_flags(workspace, "second", "--max_steps", "2")))
    out = workspace / "evaluations"
    evaluate = lambda ckpt: run(build_config(train_flags(
        workspace, "evaluations", "--do_train", "0", "--do_eval", "1", "--save_features", "--resume", str(ckpt))))
    evaluate(first / "checkpoint_latest.pt")
    old = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "log.txt"}
    assert {"eval_metrics.json", "eval_features.pt"} <= set(old)
    results = evaluate(second / "checkpoint_latest.pt")
    (aside,) = (out / "previous_runs").iterdir()
    moved = {p.name: p.read_bytes() for p in aside.iterdir()}
    assert moved == {name: data for name, data in old.items() if not name.startswith("eval_config")}
    assert json.loads((out / "eval_metrics.json").read_text()) == results
    assert results["checkpoint"]["path"] == str((second / "checkpoint_latest.pt").resolve())
    assert f"moved the previous run's eval_metrics.json, eval_features.pt into {aside}" in (out / "log.txt").read_text()


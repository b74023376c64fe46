"""The official launch scripts' command lines carry over: their flags parse and resolve as the scripts meant,
``python main.py`` on several GPUs never silently uses one, and runs record what actually ran."""
import hashlib
import importlib.metadata
import json
from pathlib import Path

import pytest

from models.checkpoint import export_official_checkpoint
from models.clip import CLIP
from models.dgl import DGL, DGLConfig
from tests.tiny_runs import TINY, data_flags
from utils.config import build_config
from utils.run import run
from utils.runtime import relaunch_on_all_gpus

# The flags of the official scripts (knightyxp/DGL scripts/*.sh at 9139fd1), verbatim but for the paths.
OFFICIAL = {
    "msrvtt": [
        "--do_train", "1", "--do_eval", "0", "--num_thread_reader", "8", "--epochs", "5", "--batch_size", "128",
        "--n_display", "50", "--train_csv", "D/MSRVTT_train.9k.csv", "--val_csv", "D/MSRVTT_JSFUSION_test.csv",
        "--data_path", "D/MSRVTT_data.json", "--features_path", "D/resized_videos", "--output_dir", "logs/m",
        "--optim", "AdamW", "--lr", "2e-3", "--coef_lr", "1e-3", "--wd", "0.2", "--max_words", "32",
        "--max_frames", "12", "--batch_size_val", "16", "--datatype", "msrvtt", "--expand_msrvtt_sentences",
        "--feature_framerate", "3", "--freeze_layer_num", "12", "--slice_framepos", "2", "--loose_type",
        "--linear_patch", "2d", "--sim_header", "meanP", "--pretrained_clip_name", "ViT-B/32", "--precision", "amp",
        "--init_method", "tcp://127.0.0.1:6061", "--pretrained_dir", "P", "--freeze_clip", "1",
        "--time_embedding", "0", "--resume", "None", "--load_from_pretrained", "0", "--shared_latent_space",
        "transformer",
    ],
    "vatex": [
        "--do_train", "1", "--do_eval", "0", "--num_thread_reader", "8", "--epochs", "10", "--batch_size", "64",
        "--n_display", "50", "--lmdb_dataset", "None", "--train_csv", "D/MSRVTT_train.9k.csv", "--val_csv",
        "D/MSRVTT_JSFUSION_test.csv", "--data_path", "D", "--features_path", "D/vatex_resized_videos",
        "--output_dir", "logs/v", "--optim", "AdamW", "--lr", "5e-3", "--coef_lr", "1e-3", "--wd", "0.2",
        "--max_words", "32", "--max_frames", "12", "--batch_size_val", "16", "--datatype", "vatex",
        "--expand_msrvtt_sentences", "--feature_framerate", "3", "--freeze_layer_num", "0", "--slice_framepos", "2",
        "--loose_type", "--linear_patch", "2d", "--sim_header", "meanP", "--pretrained_clip_name", "ViT-B/32",
        "--precision", "amp", "--init_method", "tcp://127.0.0.1:6061", "--pretrained_dir", "P", "--freeze_clip", "1",
        "--resume", "None", "--load_from_pretrained", "0", "--text_prompt_length", "8",
        "--local_each_frame_prompt_length", "4", "--global_visual_prompt_length", "4", "--unified_prompt_layers", "12",
    ],
    "lsmdc": [
        "--do_train", "1", "--do_eval", "0", "--num_thread_reader", "8", "--epochs", "10", "--batch_size", "64",
        "--n_display", "40", "--lmdb_dataset", "None", "--train_csv", "D/MSRVTT_train.7k.csv", "--val_csv",
        "D/MSRVTT_JSFUSION_test.csv", "--data_path", "D", "--features_path", "D/video", "--output_dir", "logs/l",
        "--optim", "AdamW", "--lr", "1e-2", "--coef_lr", "1e-3", "--wd", "0.2", "--max_words", "32",
        "--max_frames", "12", "--batch_size_val", "32", "--datatype", "lsmdc", "--expand_msrvtt_sentences",
        "--feature_framerate", "3", "--freeze_layer_num", "12", "--slice_framepos", "2", "--loose_type",
        "--linear_patch", "2d", "--sim_header", "meanP", "--pretrained_clip_name", "ViT-B/32", "--precision", "amp",
        "--init_method", "tcp://127.0.0.1:6061", "--pretrained_dir", "P", "--freeze_clip", "1", "--resume", "None",
        "--load_from_pretrained", "0", "--text_prompt_length", "8", "--local_each_frame_prompt_length", "4",
        "--global_visual_prompt_length", "4", "--unified_prompt_layers", "12",
    ],
    "activitynet": [
        "--do_train", "1", "--do_eval", "0", "--num_thread_reader", "6", "--epochs", "10", "--batch_size", "16",
        "--n_display", "50", "--data_dir", "H/data_activity", "--lmdb_dataset", "None", "--train_csv",
        "D/MSRVTT_train.7k.csv", "--val_csv", "D/MSRVTT_JSFUSION_test.csv", "--data_path", "D", "--features_path",
        "D/act_resized", "--output_dir", "logs/a", "--optim", "AdamW", "--lr", "1e-2", "--coef_lr", "1e-3",
        "--wd", "0.2", "--max_words", "64", "--max_frames", "64", "--batch_size_val", "16", "--datatype", "activity",
        "--expand_msrvtt_sentences", "--feature_framerate", "3", "--freeze_layer_num", "0", "--slice_framepos", "2",
        "--loose_type", "--linear_patch", "2d", "--sim_header", "meanP", "--pretrained_clip_name", "ViT-B/32",
        "--precision", "amp", "--init_method", "tcp://127.0.0.1:6061", "--pretrained_dir", "P", "--freeze_clip", "1",
        "--text_prompt_length", "8", "--local_each_frame_prompt_length", "4", "--global_visual_prompt_length", "4",
        "--unified_prompt_layers", "12",
    ],
}
# (datatype, frames, words, batch per GPU, lr, epochs, batch_size_val) of spec §4.1's table.
MEANT = {
    "msrvtt": ("msrvtt", 12, 32, 128, 2e-3, 5, 16),
    "vatex": ("vatex", 12, 32, 64, 5e-3, 10, 16),
    "lsmdc": ("lsmdc", 12, 32, 64, 1e-2, 10, 32),
    "activitynet": ("activity", 64, 64, 16, 1e-2, 10, 16),
}


@pytest.mark.parametrize("script", sorted(OFFICIAL))
def test_official_flag_sets_resolve_as_meant(script):
    cfg = build_config(OFFICIAL[script])
    datatype, frames, words, batch, lr, epochs, batch_val = MEANT[script]
    assert (cfg.data.datatype, cfg.model.max_frames, cfg.data.max_frames, cfg.data.max_words) == (datatype, frames, frames, words)
    assert (cfg.train.batch_size, cfg.train.lr, cfg.train.epochs, cfg.eval.batch_size) == (batch, lr, epochs, batch_val)
    # Only msrvtt.sh passes the variant; the others leave the official default (their shell variable never
    # reaches the program), which our scripts/vatex.sh and lsmdc.sh set to linear explicitly.
    assert cfg.model == DGLConfig(shared_latent_space="transformer", max_frames=frames, text_prompt_length=8,
                                  local_prompt_length=4, global_prompt_length=4,
                                  prompt_layers=None if script == "msrvtt" else 12)
    assert cfg.resume is None and cfg.clip_name == "ViT-B/32" and cfg.clip_dir == "P"
    assert cfg.train.precision == "amp" and cfg.train.coef_lr == 1e-3 and cfg.freeze_clip
    assert "--loose_type" not in cfg.ignored_flags and "--optim" not in cfg.ignored_flags


def test_none_means_unset_and_launcher_flags_are_accepted():
    base = OFFICIAL["vatex"]
    for extra in (["--init_model", "None"], ["--local_rank", "3"], ["--local-rank=0"], ["--tensorboard_path", "None"]):
        cfg = build_config(base + extra)
        assert cfg.resume is None and cfg.train.tensorboard_path is None
    assert build_config(base + ["--init_model", "w.pth"]).resume == "w.pth"
    assert build_config(base + ["--init_model", "w.pth"]).load_from_pretrained
    with pytest.raises(SystemExit, match="lmdb"):
        build_config(base + ["--lmdb_dataset", "x.lmdb"])


def test_python_main_on_several_gpus_runs_one_process_per_gpu():
    argv = ["--do_train", "1", "--output_dir", "o"]
    command = relaunch_on_all_gpus(argv, "main.py", environ={}, gpus=4)
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert command[-len(argv):] == argv and command[5].endswith("main.py")
    assert relaunch_on_all_gpus(argv, "main.py", environ={}, gpus=1) is None  # one GPU or the CPU: as it is
    assert relaunch_on_all_gpus(argv, "main.py", environ={"RANK": "0", "WORLD_SIZE": "4"}, gpus=4) is None  # torchrun


def test_config_json_records_what_ran(workspace):
    out = workspace / "recorded"
    clip = str(workspace / "tiny_clip.pt")
    flags = data_flags(workspace) + ["--do_eval", "1", "--resume", "None", "--pretrained_clip_name", clip,
                                     "--max_frames", "4", "--unified_transformer_layers", "2", "--precision", "amp",
                                     "--batch_size_val", "8", "--output_dir", str(out)]
    run(build_config(flags))
    facts = json.loads((out / "eval_config_no_checkpoint.json").read_text())["runtime"]  # evaluation-only: its own name
    assert facts["precision"] == "fp32"  # --precision amp on a CPU runs fp32
    assert facts["image_resolution"] == TINY.image_resolution and facts["frames"] == 4
    assert facts["world_size"] == 1 and facts["global_batch"] == facts["batch_per_rank"]
    assert facts["device"].startswith("cpu")
    assert facts["backbone"]["sha256"] == hashlib.sha256(Path(clip).read_bytes()).hexdigest()
    assert facts["versions"]["torch"] == importlib.metadata.version("torch")


@pytest.mark.parametrize("variant, wrong, needed", [
    ("linear", ["--shared_latent_space", "transformer"], "--shared_latent_space linear"),
    ("transformer", ["--max_frames", "3"], "--max_frames 4"),
])
def test_resume_of_official_checkpoint_names_the_settings_it_needs(workspace, variant, wrong, needed):
    clip = str(workspace / "tiny_clip.pt")
    model = DGL(CLIP.from_pretrained(clip), DGLConfig(shared_latent_space=variant, max_frames=4, prompt_layers=2))
    ckpt = workspace / f"official_{variant}.pth.tar"
    export_official_checkpoint(model, ckpt)
    flags = data_flags(workspace) + ["--do_eval", "1", "--resume", str(ckpt), "--pretrained_clip_name", clip,
                                     "--max_frames", "4", "--unified_transformer_layers", "2",
                                     "--output_dir", str(workspace / f"wrong_{variant}"), *wrong]
    with pytest.raises(SystemExit, match=needed):
        run(build_config(flags))

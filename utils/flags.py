"""Every command-line flag, in groups that each CLI reuses, with the official DGL names and meanings (spec §4).

``utils/config.py`` turns the parsed flags into typed configs; this module only defines the flags, the
official-name -> model-setting table and the official spellings that must keep parsing (``--resume None``,
``--unified_prompt_layers``, ``--local_rank``).
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any

from dataloaders.config import VIDEO_BACKENDS, DataConfig
from dataloaders.parsers import DATASETS
from models.backbones import BACKBONES, DEFAULT_BACKBONE
from models.dgl import MODELS, POOLED_OUTPUT_TYPES, SHARED_LATENT_SPACES, DGLConfig

# Official flag -> DGLConfig field: the one place the two namings meet.
MODEL_FLAGS = {
    "backbone": "backbone",
    "model": "model",
    "shared_latent_space": "shared_latent_space",
    "max_frames": "max_frames",
    "text_prompt_length": "text_prompt_length",
    "local_each_frame_prompt_length": "local_prompt_length",
    "global_visual_prompt_length": "global_prompt_length",
    "unified_transformer_layers": "prompt_layers",
    "visual_output_type": "visual_output_type",
}
# Official flags kept only so that old command lines parse: (name, takes a value). The official --debug is not
# here: every parser has it (utils/cli.py), and it shows the traceback of an error.
IGNORED_FLAGS = {
    "--cache_dir": True, "--camoe_dsl": True, "--cross_model": True, "--cross_num_hidden_layers": True,
    "--data_dir": True, "--dist_backend": True, "--eval_frame_order": True, "--feature_framerate": True,
    "--freeze_layer_num": True, "--gpu": True, "--hard_negative_rate": True, "--init_method": True,
    "--lr_decay": True, "--margin": True, "--multigpu": True, "--n_gpu": True,
    "--n_pair": True, "--negative_weighting": True, "--optim": True, "--pre_norm": True, "--remote": True,
    "--slice_framepos": True, "--task_type": True, "--temperature_new": True, "--text_num_hidden_layers": True,
    "--tfm_heads": True, "--tfm_layers": True, "--train_frame_order": True, "--video_dim": True,
    "--visual_num_hidden_layers": True, "--world_size": True, "--log_level": True,
    "--time_embedding": True, "--inference_speed_test": True, "--save_feature_path": True,
    "--loose_type": False, "--do_pretrain": False, "--do_lower_case": False, "--dp": False,
    "--use_mil": False, "--sampled_use_mil": False, "--use_bn_sync": False,
}
# Flags the launchers or the official scripts always pass; accepted without a warning.
SILENT_FLAGS = ("--loose_type", "--optim", "--init_method", "--feature_framerate", "--slice_framepos",
                "--freeze_layer_num", "--time_embedding", "--save_feature_path", "--data_dir", "--temperature_new",
                "--camoe_dsl")
# Flags whose official meaning we keep only for the one value the method supports.
FIXED_FLAGS = {"--sim_header": "meanP", "--linear_patch": "2d"}


def optional(kind: Callable[[str], Any] = str) -> Callable[[str], Any]:
    """A flag value where the official scripts' ``None`` (or an empty string) means "not given"."""
    def convert(text: str) -> Any:
        return None if text.strip() in ("", "None", "none") else kind(text)

    convert.__name__ = getattr(kind, "__name__", "value")
    return convert


def add_data_flags(parser: argparse.ArgumentParser) -> None:
    """Where a dataset lives and how it becomes tensors (DataConfig); ``--max_frames`` is a model flag."""
    d = DataConfig()
    g = parser.add_argument_group("data")
    g.add_argument("--datatype", default=d.datatype, choices=sorted(DATASETS), help="dataset, and so its file layout")
    g.add_argument("--data_path", default=d.data_path, help="annotation file (MSR-VTT) or folder")
    g.add_argument("--features_path", default=d.features_path, help="folder of the (compressed) videos")
    g.add_argument("--train_csv", default=d.train_csv, help="MSR-VTT training video list")
    g.add_argument("--val_csv", default=d.val_csv, help="MSR-VTT test pairs (JSFusion 1k-A)")
    g.add_argument("--max_words", type=int, default=d.max_words, help="caption tokens kept (longer captions are cut)")
    g.add_argument("--image_resolution", type=optional(int), default=None,
                   help="input size; the backbone's (the default) or, for BLIP, another size its position embeddings are interpolated to")
    g.add_argument("--expand_msrvtt_sentences", action=argparse.BooleanOptionalAction, default=d.expand_msrvtt_sentences,
                   help="MSR-VTT training: one sample per caption instead of one per video")
    g.add_argument("--video_backend", default=d.video_backend, choices=VIDEO_BACKENDS,
                   help="video decoder; auto: the first installed that reads the file")
    g.add_argument("--frame_cache", type=optional(), default=None, help="folder made by preprocess/cache_frames.py")
    g.add_argument("--skip_bad_videos", action="store_true",
                   help="drop missing/unreadable videos (and their captions) at start-up instead of failing")


def add_backbone_flags(parser: argparse.ArgumentParser, default: str | None = "ViT-B/32", choose: bool = True) -> None:
    """Where the backbone's weights are; ``choose``: also which backbone (a model config field)."""
    g = parser.add_argument_group("backbone")
    if choose:
        g.add_argument("--backbone", choices=sorted(BACKBONES), default=DEFAULT_BACKBONE if default else None,
                       help="the frozen backbone DGL prompts (official DGL checkpoints: openai-clip)"
                       + ("" if default else "; default: the checkpoint's"))
    g.add_argument("--pretrained_clip_name", type=optional(), default=default,
                   help="ViT-B/32, ViT-B/16, ViT-L/14, ViT-L/14@336px (also as open_clip's ViT-B-32 or the Hugging Face "
                   "id openai/clip-vit-base-patch32), another Hugging Face id, or a CLIP file or folder (OpenAI, Hugging "
                   "Face, open_clip)" + ("" if default else "; default: the checkpoint's"))
    g.add_argument("--pretrained_dir", type=optional(), default=None,
                   help="folder holding ViT-B-32.pt / ViT-L-14.pt ... (default: $DGL_PRETRAINED_DIR, else "
                   "~/models/pretrained; Hugging Face ids are also looked for in the Hugging Face cache); "
                   "python -m apps.download NAME fetches OpenAI's files")


def add_model_flags(parser: argparse.ArgumentParser, for_checkpoint: bool = False) -> None:
    """DGL's sizes. ``for_checkpoint``: every default is None, i.e. "as the checkpoint says" (scripts that load
    a trained model); otherwise the official defaults."""
    d = DGLConfig()
    default = (lambda value: None) if for_checkpoint else (lambda value: value)
    title = "DGL config (default: read from the checkpoint)" if for_checkpoint else "DGL model"
    g = parser.add_argument_group(title)
    g.add_argument("--model", choices=MODELS, default=default(d.model),
                   help="dgl: DGL's prompts on any backbone; dgl_blip (with --backbone blip): BLIP with DGL's global "
                   "prompts and global-local attention only, trained with BLIP's ITC + ITM (docs/dgl_blip.md)")
    g.add_argument("--shared_latent_space", choices=SHARED_LATENT_SPACES, default=default(d.shared_latent_space),
                   help="how the shared prompts are generated: DGL-Transformer or DGL-Linear")
    g.add_argument("--max_frames", type=int, default=default(d.max_frames),
                   help="T, frames per video (the transformer variant's prompts are frame-specific)")
    g.add_argument("--text_prompt_length", type=int, default=default(d.text_prompt_length), help="text prompt tokens per layer")
    g.add_argument("--local_each_frame_prompt_length", type=int, default=default(d.local_prompt_length),
                   help="local prompt tokens per frame and layer")
    g.add_argument("--global_visual_prompt_length", type=int, default=default(d.global_prompt_length),
                   help="global prompt tokens per layer (shared by all frames)")
    g.add_argument("--unified_transformer_layers", "--unified_prompt_layers", dest="unified_transformer_layers",
                   type=int, default=None, help="prompted layers (default: every layer of the backbone, the "
                   "official 12 of ViT-B; --unified_prompt_layers is the official scripts' spelling)")
    g.add_argument("--visual_output_type", choices=POOLED_OUTPUT_TYPES, default=default(d.visual_output_type),
                   help="pooled video feature")


def dgl_config(flags: Mapping[str, Any], **fixed: Any) -> DGLConfig:
    """DGLConfig from official flag names (a parsed namespace's ``vars`` or the official argparse dump)."""
    values = {field: flags[flag] for flag, field in MODEL_FLAGS.items() if flags.get(flag) is not None}
    return DGLConfig(**{**values, **fixed})


def model_overrides(flags: Mapping[str, Any]) -> dict[str, Any]:
    """The DGLConfig fields given on the command line of a script that loads a checkpoint."""
    return {field: flags[flag] for flag, field in MODEL_FLAGS.items() if flags.get(flag) is not None}


def add_compat_flags(parser: argparse.ArgumentParser) -> None:
    """Official flags with no effect here, the two fixed ones, and the launcher's ``--local_rank``."""
    for flag, takes_value in IGNORED_FLAGS.items():
        if takes_value:
            parser.add_argument(flag, default=None, help=argparse.SUPPRESS)
        else:
            parser.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    for flag, value in FIXED_FLAGS.items():
        parser.add_argument(flag, default=value, help=f"only {value!r} (kept for command-line compatibility)")
    parser.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int, default=None,
                        help=argparse.SUPPRESS)  # torch.distributed.launch passes it; LOCAL_RANK says the same

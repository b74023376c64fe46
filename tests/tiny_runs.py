"""What the training tests share: a tiny CLIP's shape and main.py's flags for the generated MSR-VTT workspace
(the ``workspace`` fixture of tests/conftest.py)."""
from pathlib import Path

from models.pretrained import CLIPConfig

TINY = CLIPConfig(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=128, vision_heads=2,
                  vision_patch_size=8, grid_size=4, context_length=77, vocab_size=49408, text_width=64,
                  text_heads=1, text_layers=2)


def data_flags(root: Path) -> list[str]:
    data = root / "data"
    return [
        "--datatype", "msrvtt", "--expand_msrvtt_sentences", "--train_csv", str(data / "MSRVTT_train.9k.csv"),
        "--val_csv", str(data / "MSRVTT_JSFUSION_test.csv"), "--data_path", str(data / "MSRVTT_data.json"),
        "--features_path", str(data / "videos"), "--max_words", "16", "--num_thread_reader", "0",
    ]


def train_flags(root: Path, out: str, *extra: str) -> list[str]:
    return data_flags(root) + [
        "--do_train", "1", "--pretrained_clip_name", str(root / "tiny_clip.pt"), "--max_frames", "4",
        "--unified_transformer_layers", "2", "--batch_size", "8", "--batch_size_val", "8", "--epochs", "2",
        "--lr", "1e-3", "--eval_every_epoch", "0", "--n_display", "1", "--output_dir", str(root / out), *extra,
    ]

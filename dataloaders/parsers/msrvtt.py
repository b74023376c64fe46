"""MSR-VTT: train list CSV + `MSRVTT_data.json` captions; test = JSFusion 1k-A pairs CSV."""
from __future__ import annotations

from dataloaders.config import DataConfig
from dataloaders.files import AnnotationError, inside_folder, read_csv_columns, read_json
from dataloaders.splits import VideoTextSplit, split_from_pairs

SUBSETS = ("train", "val", "test")


def parse(cfg: DataConfig, subset: str) -> VideoTextSplit:
    """Train: every caption of the listed videos (or one random caption per video without
    --expand_msrvtt_sentences). Val and test: one (video, sentence) pair per row of val_csv."""
    if subset not in SUBSETS:
        raise ValueError(f"msrvtt subset must be one of {SUBSETS}, got {subset!r}")
    if subset == "train":
        rows = read_csv_columns(cfg.train_csv, "MSR-VTT training list", ("video_id",), "--train_csv")
        pairs, ids_file = _training_pairs(cfg, {row["video_id"] for row in rows}), cfg.train_csv
        source, pair_rows = cfg.data_path, None
    else:
        rows = read_csv_columns(cfg.val_csv, "MSR-VTT test CSV", ("video_id", "sentence"), "--val_csv")
        pairs, ids_file = [(row["video_id"], row["sentence"]) for row in rows], cfg.val_csv
        source, pair_rows = cfg.val_csv, [f"data row {number}" for number in range(1, len(rows) + 1)]
    row_of = {row["video_id"]: number for number, row in enumerate(rows, 1)}
    paths = {v: inside_folder(cfg.features_path, f"{v}.mp4", f"{ids_file} data row {row_of[v]}") for v, _ in pairs}
    return split_from_pairs(
        f"msrvtt/{subset}",
        pairs,
        paths,
        multi_sentence=False,
        sample_one_caption_per_video=subset == "train" and not cfg.expand_msrvtt_sentences,
        source=source,
        rows=pair_rows,
    )


def _training_pairs(cfg: DataConfig, listed: set[str]) -> list[tuple[str, str]]:
    data = read_json(cfg.data_path, "MSR-VTT captions (--data_path, MSRVTT_data.json)")
    try:
        sentences = data["sentences"]
        pairs = [(s["video_id"], s["caption"]) for s in sentences if s["video_id"] in listed]
    except (KeyError, TypeError) as err:
        raise AnnotationError(
            f"{cfg.data_path} lacks sentences[].video_id/caption ({err!r}). Fix: use CLIP4Clip's MSRVTT_data.json."
        ) from err
    uncaptioned = listed - {video_id for video_id, _ in pairs}
    if uncaptioned:
        raise AnnotationError(
            f"{len(uncaptioned)} videos of {cfg.train_csv} have no caption in {cfg.data_path}, "
            f"e.g. {sorted(uncaptioned)[:3]}. Fix: pair the train CSV with its MSRVTT_data.json."
        )
    return pairs

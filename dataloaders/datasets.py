"""torch Datasets over a `VideoTextSplit`: training pairs, and videos / captions once each for evaluation."""
from __future__ import annotations

from torch.utils.data import Dataset, default_collate

from dataloaders.config import DataConfig
from dataloaders.frames import SplitVideos
from dataloaders.sampling import sample_rng
from dataloaders.splits import VideoTextSplit
from models.backbones import Tokenizer, get_tokenizer


def collate_trimmed(items: list[dict]) -> dict:
    """The default batch, with ``input_ids`` cut after the batch's longest caption (its mask; see
    `DGL.encode_text`) in the loader, so that a pinned batch is what goes to the device (a slice taken later
    would be copied through pageable memory, which makes the host wait for the GPU)."""
    batch = default_collate(items)
    if "input_ids" in batch:
        width = int(batch["input_mask"].sum(dim=-1).max())
        batch["input_ids"] = batch["input_ids"][:, :width].contiguous()
        batch["input_mask"] = batch["input_mask"][:, :width].contiguous()
    return batch


class TrainPairDataset(Dataset):
    """One item per (caption, video) pair with TSN frame sampling.

    When the split asks for one caption per video (MSR-VTT without --expand_msrvtt_sentences) there
    is one item per video with a random caption. All randomness of item i comes from a generator
    seeded with (cfg.seed, epoch, i): call `set_epoch` before creating each epoch's DataLoader
    iterator (workers copy the dataset then, so persistent_workers would keep the old epoch).
    """

    def __init__(self, split: VideoTextSplit, cfg: DataConfig, tokenizer: Tokenizer | None = None) -> None:
        self.split = split
        self.max_words = cfg.max_words
        self.seed = cfg.seed
        self.epoch = 0
        self.tokenizer = tokenizer or get_tokenizer(cfg.backbone)
        self.videos = SplitVideos(split, cfg, train=True)
        self.captions_of = split.video_captions() if split.sample_one_caption_per_video else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.split.num_videos if self.captions_of is not None else self.split.num_captions

    def __getitem__(self, index: int) -> dict:
        rng = sample_rng(self.seed, self.epoch, index)
        if self.captions_of is not None:
            video_index, caption_index = index, int(rng.choice(self.captions_of[index]))
        else:
            video_index, caption_index = self.split.caption_video[index], index
        ids, mask = self.tokenizer(self.split.captions[caption_index], self.max_words)
        video, video_mask = self.videos.load(video_index, rng)
        return dict(
            input_ids=ids[0], input_mask=mask[0], video=video, video_mask=video_mask,
            video_index=video_index, caption_index=caption_index,
        )


class VideoDataset(Dataset):
    """Each video of the split once, segment-centre sampling: encode the gallery once."""

    def __init__(self, split: VideoTextSplit, cfg: DataConfig) -> None:
        self.split = split
        self.videos = SplitVideos(split, cfg, train=False)

    def __len__(self) -> int:
        return self.split.num_videos

    def __getitem__(self, index: int) -> dict:
        video, video_mask = self.videos.load(index)
        return dict(video=video, video_mask=video_mask, video_index=index)


class TextDataset(Dataset):
    """Each caption of the split once: encode the queries once."""

    def __init__(self, split: VideoTextSplit, cfg: DataConfig, tokenizer: Tokenizer | None = None) -> None:
        self.split = split
        self.max_words = cfg.max_words
        self.tokenizer = tokenizer or get_tokenizer(cfg.backbone)

    def __len__(self) -> int:
        return self.split.num_captions

    def __getitem__(self, index: int) -> dict:
        ids, mask = self.tokenizer(self.split.captions[index], self.max_words)
        return dict(input_ids=ids[0], input_mask=mask[0], caption_index=index)

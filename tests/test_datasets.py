"""Each dataset parser on a tiny dataset in its official layout, through the torch Datasets.

Videos paint their frame index, so the frames a sample holds are read back and compared with
the official sampling rules computed by hand: evaluation takes int(tick/2 + tick*j) with
tick = n/T, training one frame per segment of n//T frames.
"""
import dataclasses
import logging
import pickle

import pytest
import torch

from dataloaders import DATASETS, TextDataset, TrainPairDataset, VideoDataset, VideoReadError, build_split
from dataloaders.files import AnnotationError
from models.tokenizer import ClipTokenizer
from tests import layouts
from tests.video_utils import corrupt_file, indices_of_video

T, S, LW = 4, 32, 16


def assert_tsn(indices, n):
    """One index inside each of the T segments of n // T frames (or 0..n-1 repeated when n < T)."""
    segment = n // T
    if segment == 0:
        assert indices.tolist() == [min(j, n - 1) for j in range(T)]
    else:
        for j, index in enumerate(indices):
            assert j * segment <= index < (j + 1) * segment, (indices, n)


def eval_indices(dataset, video_index):
    item = dataset[video_index]
    return indices_of_video(item["video"]).tolist(), item["video_mask"].tolist()


@pytest.fixture(scope="module")
def msrvtt(tmp_path_factory):
    return layouts.make_msrvtt(tmp_path_factory.mktemp("msrvtt"))


def test_msrvtt_train_pairs_every_caption_of_listed_videos(msrvtt):
    split = build_split(msrvtt, "train")
    assert split.name == "msrvtt/train" and not split.multi_sentence
    assert split.video_ids == ["video0", "video1", "video2"]
    assert split.captions == [f"video{v} caption {k}" for k in range(2) for v in range(3)]
    assert split.caption_video == [0, 1, 2, 0, 1, 2]
    assert [p.name for p in split.video_paths] == ["video0.mp4", "video1.mp4", "video2.mp4"]

    dataset = TrainPairDataset(split, msrvtt)
    assert len(dataset) == 6
    item = dataset[3]
    assert item["video_index"] == 0 and item["caption_index"] == 3
    assert item["video"].shape == (T, 3, S, S) and item["video"].dtype == torch.uint8
    assert item["video_mask"].dtype == torch.long and item["video_mask"].tolist() == [1, 1, 1, 1]
    ids, mask = ClipTokenizer()("video0 caption 1", LW)
    assert torch.equal(item["input_ids"], ids[0]) and torch.equal(item["input_mask"], mask[0])
    assert item["input_ids"].dtype == torch.long and item["input_ids"].shape == (LW,)


def test_msrvtt_training_sampling_is_tsn_and_reproducible(msrvtt):
    dataset = TrainPairDataset(build_split(msrvtt, "train"), msrvtt)
    frames = {0: 30, 1: 5, 2: 13}
    draws = []
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for i in range(len(dataset)):
            indices = indices_of_video(dataset[i]["video"])
            assert_tsn(indices, frames[dataset[i]["video_index"]])
            draws.append(indices.tolist())
    dataset.set_epoch(1)
    again = [indices_of_video(dataset[i]["video"]).tolist() for i in range(len(dataset))]
    assert again == draws[6:12]  # same (seed, epoch, index) -> same frames
    assert draws[0:6] != draws[6:12]  # another epoch draws other frames (n = 30 has 7^4 choices)


def test_msrvtt_without_expansion_draws_one_caption_per_video(msrvtt):
    cfg = dataclasses.replace(msrvtt, expand_msrvtt_sentences=False)
    dataset = TrainPairDataset(build_split(cfg, "train"), cfg)
    assert len(dataset) == 3
    chosen = set()
    for epoch in range(8):
        dataset.set_epoch(epoch)
        for i in range(3):
            item = dataset[i]
            assert item["video_index"] == i
            assert dataset.split.caption_video[item["caption_index"]] == i
            chosen.add(item["caption_index"])
    assert chosen == set(range(6))


def test_msrvtt_test_is_one_pair_per_row_with_centre_frames(msrvtt):
    split = build_split(msrvtt, "test")
    assert split.video_ids == ["video3", "video0"]
    assert split.captions == ["a man plays guitar", "a dog runs"]
    assert split.caption_video == [0, 1]
    videos = VideoDataset(split, msrvtt)
    assert eval_indices(videos, 0) == ([3, 9, 15, 21], [1, 1, 1, 1])  # n = 24
    assert eval_indices(videos, 1) == ([3, 11, 18, 26], [1, 1, 1, 1])  # n = 30
    texts = TextDataset(split, msrvtt)
    assert len(texts) == 2 and texts[1]["caption_index"] == 1
    assert torch.equal(texts[1]["input_ids"], ClipTokenizer()("a dog runs", LW)[0][0])
    # The video tensor is the uint8 gray frame (the model normalises it).
    gray = 10 + 7 * 3
    assert torch.allclose(videos[0]["video"][0].float().mean(dim=(1, 2)), torch.full((3,), float(gray)), atol=1.5)


def test_datasets_pickle_for_worker_processes(msrvtt):
    dataset = TrainPairDataset(build_split(msrvtt, "train"), msrvtt)
    clone = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(clone[2]["video"], dataset[2]["video"])


def test_short_video_repeats_last_frame_with_mask(tmp_path):
    cfg = layouts.make_msrvtt(tmp_path, {"video0": 3, "video1": 2, "video2": 2, "video3": 2})
    videos = VideoDataset(build_split(cfg, "test"), cfg)
    assert eval_indices(videos, 1) == ([0, 1, 2, 2], [1, 1, 1, 0])
    train = TrainPairDataset(build_split(cfg, "train"), cfg)
    item = train[0]
    assert indices_of_video(item["video"]).tolist() == [0, 1, 2, 2]
    assert item["video_mask"].tolist() == [1, 1, 1, 0]


def test_vatex_multi_sentence_and_tsn_training(tmp_path):
    cfg = layouts.make_vatex(tmp_path)
    test = build_split(cfg, "test")
    assert test.multi_sentence and test.video_ids == ["vidC", "vidD"]
    assert test.captions == layouts.VATEX_CAPTIONS["vidC"] + layouts.VATEX_CAPTIONS["vidD"]
    assert [c.tolist() for c in test.video_captions()] == [[0, 1, 2], [3, 4]]
    assert build_split(cfg, "val").captions == test.captions  # "val" reads the test list
    videos = VideoDataset(test, cfg)
    assert eval_indices(videos, 0) == ([1, 4, 7, 10], [1, 1, 1, 1])  # n = 12
    assert eval_indices(videos, 1) == ([0, 1, 2, 2], [1, 1, 1, 0])  # n = 3

    train = build_split(cfg, "train")
    assert train.caption_video == [0, 0, 1] and train.video_paths[0].parent.name == "part1"
    dataset = TrainPairDataset(train, cfg)  # fixed bug 38: training samples TSN, not centres
    seen = set()
    for epoch in range(4):
        dataset.set_epoch(epoch)
        indices = indices_of_video(dataset[0]["video"])
        assert_tsn(indices, 20)
        seen.add(tuple(indices))
    assert len(seen) > 1


def test_lsmdc_rows_with_repeated_clips_and_unlisted_dropped(tmp_path, caplog):
    cfg = layouts.make_lsmdc(tmp_path)
    with caplog.at_level(logging.INFO):
        train = build_split(cfg, "train")
    assert train.video_ids == ["clip1", "clip2"]
    assert train.captions == ["SOMEONE walks.", "He sits.", "SOMEONE runs."]
    assert train.caption_video == [0, 1, 0]
    assert train.dropped == {"clip not in video_path.json": 1}
    assert "dropped 1 rows" in caplog.text
    test = build_split(cfg, "test")
    assert test.video_ids == ["clip3", "clip1"] and test.caption_video == [0, 1]
    assert test.video_paths[0].relative_to(cfg.features_path).as_posix() == "movie2/clip3.avi"
    assert eval_indices(VideoDataset(test, cfg), 0) == ([1, 4, 6, 9], [1, 1, 1, 1])  # n = 11
    assert_tsn(indices_of_video(TrainPairDataset(train, cfg)[1]["video"]), 7)

    (cfg.data_path / "LSMDC16_annos_val.csv").write_text("clip2\t0\t1\tonly four fields\n")
    with pytest.raises(AnnotationError, match=r"LSMDC16_annos_val.csv:1 has 4 .*expected 6"):
        build_split(cfg, "val")


def test_activitynet_paragraphs_windows_and_exclusions(tmp_path):
    cfg = layouts.make_activitynet(tmp_path)
    train = build_split(cfg, "train")
    assert train.video_ids == ["v_aaa", "v_bbb"]
    assert train.captions == ["A man walks in.  He sits down.", "Kids play."]
    assert train.windows == [(0.0, 4.0), (0.0, 10.0)]
    assert train.dropped == {"no captions or path": 3}
    videos = VideoDataset(train, cfg)
    # Window [0, 4] s at 3 fps = frames 0..12 (n = 13) of the 20 frames of v_aaa.
    assert eval_indices(videos, 0) == ([1, 4, 8, 11], [1, 1, 1, 1])
    assert eval_indices(videos, 1) == ([3, 11, 18, 26], [1, 1, 1, 1])  # whole 30-frame video
    assert_tsn(indices_of_video(TrainPairDataset(train, cfg)[0]["video"]), 13)
    test = build_split(cfg, "test")
    assert test.video_ids == ["v_ccc"] and test.captions == ["A bird flies. It lands."]
    # Cleaning collapses the double space of the joined paragraph, as in the reference.
    ids = TextDataset(train, cfg)[0]["input_ids"]
    assert torch.equal(ids, ClipTokenizer()("A man walks in. He sits down.", LW)[0][0])


def test_msvd_reads_train_list_120_and_token_lists(tmp_path):
    cfg = layouts.make_msvd(tmp_path)
    train = build_split(cfg, "train")
    assert train.multi_sentence and train.video_ids == ["m1", "m2"]
    assert train.captions == ["a dog barks", "dog barking", "a man cooks"]
    test = build_split(cfg, "test")
    assert test.video_ids == ["m3", "m1"] and test.caption_video == [0, 0, 0, 1, 1]
    assert [c.tolist() for c in test.video_captions()] == [[0, 1, 2], [3, 4]]
    assert eval_indices(VideoDataset(test, cfg), 0) == ([1, 5, 8, 12], [1, 1, 1, 1])  # n = 14
    (cfg.data_path / "train_list.txt").write_text("m2\n")  # the released name wins when present
    assert build_split(cfg, "train").video_ids == ["m2"]


def test_didemo_paragraphs_suffix_match_and_window(tmp_path):
    cfg = layouts.make_didemo(tmp_path)
    split = build_split(cfg, "test")
    assert split.video_ids == ["x1.mp4", "x2.3gp"]
    assert split.captions == ["a man enters he leaves", "a ball rolls"]
    assert split.video_paths[1].name == "x2.3gp.mp4"
    assert split.windows == [(0.0, 31.0), (0.0, 31.0)]
    assert split.dropped == {"no descriptions": 1}
    assert eval_indices(VideoDataset(split, cfg), 0) == ([1, 3, 5, 7], [1, 1, 1, 1])  # n = 8


def test_registry_covers_the_official_datatypes():
    assert set(DATASETS) == {"msrvtt", "vatex", "lsmdc", "activity", "msvd", "didemo"}
    with pytest.raises(ValueError, match="unknown datatype"):
        build_split(layouts.DataConfig(datatype="kinetics"), "train")


def test_missing_video_is_an_error_naming_file_and_row(tmp_path):
    cfg = layouts.make_msrvtt(tmp_path)
    (cfg.features_path / "video1.mp4").unlink()
    with pytest.raises(FileNotFoundError) as info:
        build_split(cfg, "train")
    message = str(info.value)
    assert "1 of 3 video files are missing" in message and "msrvtt/train video #1" in message
    assert "video1.mp4" in message and "--skip_bad_videos" in message


def test_unreadable_video_fails_when_loaded_naming_file_and_row(tmp_path):
    cfg = layouts.make_msrvtt(tmp_path)
    corrupt_file(cfg.features_path / "video3.mp4")
    split = build_split(cfg, "test")  # files exist: strict mode does not decode at start-up
    with pytest.raises(VideoReadError, match=r"msrvtt/test video #0 \(id 'video3'.*video3\.mp4.*Fix:"):
        VideoDataset(split, cfg)[0]


def test_skip_mode_drops_missing_and_unreadable_videos_with_counts(tmp_path, caplog):
    cfg = layouts.make_msrvtt(tmp_path)
    (cfg.features_path / "video1.mp4").unlink()
    corrupt_file(cfg.features_path / "video2.mp4")
    cfg.skip_bad_videos = True
    with caplog.at_level(logging.INFO):
        split = build_split(cfg, "train")
    assert split.video_ids == ["video0"] and split.caption_video == [0, 0]
    assert split.captions == ["video0 caption 0", "video0 caption 1"]
    assert split.dropped == {"missing video file": 1, "unreadable video": 1, "captions of dropped videos": 4}
    assert "skipped 2 bad videos (1 missing, 1 unreadable)" in caplog.text
    assert "video1.mp4" in caplog.text and "video2.mp4" in caplog.text
    assert len(TrainPairDataset(split, cfg)) == 2


def test_both_backends_give_the_same_model_input(msrvtt):
    split = build_split(msrvtt, "test")
    by_backend = [VideoDataset(split, dataclasses.replace(msrvtt, video_backend=b))[1]["video"] for b in ("decord", "pyav")]
    assert torch.equal(*by_backend)


def test_measure_loader_times_a_split_from_its_config(msrvtt):
    from apps.bench.loader import measure_loader

    result = measure_loader(config=msrvtt, subset="train", num_workers=0, batch_size=1, max_batches=2)
    assert result["videos"] == 2 and result["videos_per_s"] > 0

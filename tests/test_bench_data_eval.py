"""apps/bench/loader_rows.py and apps/bench/real_size_eval.py on scaled-down inputs (a few short videos, a tiny CLIP)."""
import json

from apps.bench import loader_rows as bench_data, real_size_eval as bench_eval
from apps.bench.loader_rows import GalleryConfig
from models.flops import video_flops

SHORT = dict(min_seconds=2.0, max_seconds=4.0, size=(96, 64))


def test_gallery_durations_links_and_loader_section(tmp_path):
    gallery = GalleryConfig(videos=5, unique=3, **SHORT)
    paths = bench_data.msrvtt_shaped_videos(tmp_path / "v", gallery)
    assert [p.name for p in paths] == [f"video{i}.mp4" for i in range(5)]
    assert paths[3].samefile(paths[0]) and paths[4].samefile(paths[1])  # beyond `unique`: hard links
    result = bench_data.run_section(gallery, frames=4, resolution=32, rounds=2, workers=1, workdir=tmp_path / "w")
    assert set(result["videos_per_s_per_core"]) == {"videos", "raw_cache", "jpeg_cache"}
    assert all(len(rates) == 2 and min(rates) > 0 for rates in result["rounds"].values())
    frames = result["frames"]
    assert 5 * 2 * 3 <= frames <= 5 * 4 * 3  # 2-4 s at 3 fps
    assert result["bytes"]["raw_cache"] == frames * 3 * 32 * 32 + 5 * 128  # .npy: header + pixels
    assert 0 < result["jpeg_to_raw_bytes"] < 1
    assert any("jpeg_cache" in line for line in bench_data.format_rows(result))


def test_eval_section_times_main_py_from_each_source(tmp_path):
    cfg = bench_eval.EvalBenchConfig(GalleryConfig(videos=4, unique=4, **SHORT), model="tiny", frames=2, batch_size_val=2, readers=0)
    result = bench_eval.run_section(cfg, tmp_path, workers=1)
    assert set(result["runs"]) == {"videos", "raw_cache", "jpeg_cache"}
    assert all("error" not in run and run["wall_seconds"] > 0 for run in result["runs"].values()), result["runs"]
    # Decoded videos and the raw cache give the same pixels, hence the same features and metrics.
    assert result["features_videos_vs_raw_cache"]["max_abs"] == 0.0
    assert result["runs"]["videos"]["t2v_R@1"] == result["runs"]["raw_cache"]["t2v_R@1"]
    assert result["features_jpeg_cache_vs_raw_cache"]["min_cosine"] > 0.99
    assert result["caches"]["jpeg_cache"]["bytes"] < result["caches"]["raw_cache"]["bytes"]
    for run in result["runs"].values():  # the floor is a lower bound: never above the wall time unless flagged
        assert 0 < run["floor_seconds"] and (run["efficiency"] is None or run["floor_seconds"] <= run["wall_seconds"])
    rows = bench_eval.format_rows(json.loads(json.dumps(result)))
    assert len(rows) == 6 and "main.py --do_eval 1" in rows[0]


def test_eval_flops_counts_each_caption_batch_to_its_longest_caption():
    cfg = bench_eval.EvalBenchConfig(GalleryConfig(videos=3), model="B/32", frames=12, batch_size_val=2)
    # "a" and "a man" are 1 and 2 BPE tokens, the third caption 5: batches [3, 4] and [7] id slots with SOT/EOT.
    flops, shapes = bench_eval.eval_flops(cfg, ["a", "a man", "a man plays the guitar"])
    assert (shapes.vision_width, shapes.grid, shapes.frames, shapes.prompt_layers) == (768, 7, 12, 12)
    head = 1 + shapes.text_prompts // 2  # SOT and the prefix prompts: once per batch, SOT's row read on 11 layers
    once = 12 * 4 * head * 512**2 + 11 * (20 * 512**2 + 4 * 512 * 1)  # SOT's row sees its own key only
    by_hand = sum(n * (12 * (24 * (k - 1) * 512**2 + 4 * 512 * (k - 1) * (head + k - 1)) + 2 * 512 * 512) + once
                  for n, k in ((2, 4), (1, 7)))
    assert flops - video_flops(shapes, 2)[0] - video_flops(shapes, 1)[0] == by_hand  # videos in batches of 2

"""BLIP through the commands, on a tiny random Hugging Face BLIP folder and the MSR-VTT layout of tests/layouts.py:
main.py's zero-shot meanP evaluation against transformers' own BLIP features (frame mean of the normalised image
features, cosine with the normalised text features) scored by utils.metrics, and retrieve.py index/search with a
DGL checkpoint that main.py trained on BLIP."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers

import retrieve
from dataloaders.frames import read_eval_frames
from models.backbones import get_tokenizer
from models.blip import BLIP_MEAN, BLIP_STD
from models.factory import load_dgl
from tests.blip_files import SIZE, TEST_PAIRS, make_pairs_msrvtt, write_hf_folder
from utils.metrics import retrieval_metrics

ROOT = Path(__file__).resolve().parents[1]
MAX_FRAMES, MAX_WORDS = 4, 16


@pytest.fixture(scope="module")
def blip_workspace(tmp_path_factory):
    """An MSR-VTT folder with six test pairs and a tiny random BLIP (transformers' model, and its folder)."""
    root = tmp_path_factory.mktemp("blip")
    cfg = make_pairs_msrvtt(root / "data")
    peer = write_hf_folder(root / "blip-itm-tiny", SIZE)
    return root, cfg, peer


def run_main(*flags: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), *flags], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def data_flags(cfg, folder: Path) -> list[str]:
    return ["--datatype", "msrvtt", "--backbone", "blip", "--pretrained_clip_name", str(folder),
            "--train_csv", str(cfg.train_csv), "--val_csv", str(cfg.val_csv), "--data_path", str(cfg.data_path),
            "--features_path", str(cfg.features_path), "--max_words", str(MAX_WORDS), "--max_frames", str(MAX_FRAMES),
            "--num_thread_reader", "0", "--batch_size_val", "4"]


@torch.no_grad()
def peer_features(peer, videos: list[Path], captions: list[str], vocab: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' BLIP on the evaluation frames: normalised text features, and the mean of each video's
    normalised frame features (CLIP4Clip's meanP), pixels normalised as BlipImageProcessor does."""
    mean, std = torch.tensor(BLIP_MEAN).view(3, 1, 1), torch.tensor(BLIP_STD).view(3, 1, 1)
    video = []
    for path in videos:
        frames = read_eval_frames(path, MAX_FRAMES, SIZE.resolution)[0].float() / 255
        cls = peer.vision_model(pixel_values=(frames - mean) / std).last_hidden_state[:, 0]
        video.append(F.normalize(peer.vision_proj(cls), dim=-1).mean(dim=0))
    tokens = transformers.BertTokenizer(str(vocab))(captions, padding="max_length", truncation=True,
                                                     max_length=MAX_WORDS, return_tensors="pt")
    hidden = peer.text_encoder(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
    return F.normalize(peer.text_proj(hidden[:, 0]), dim=-1), torch.stack(video)


def test_main_evaluates_blip_zero_shot_as_transformers_features_score(blip_workspace):
    root, cfg, peer = blip_workspace
    folder, out = root / "blip-itm-tiny", root / "zero_shot"
    run_main(*data_flags(cfg, folder), "--do_eval", "1", "--baseline", "meanp", "--save_features",
             "--output_dir", str(out))
    metrics = json.loads((out / "eval_metrics.json").read_text())
    saved = torch.load(out / "eval_features.pt", weights_only=False)
    order = list(saved["video_ids"])
    assert sorted(order) == sorted(TEST_PAIRS)
    text, video = peer_features(peer, [cfg.features_path / f"{v}.mp4" for v in order], saved["captions"],
                                folder / "vocab.txt")
    torch.testing.assert_close(F.normalize(saved["text"], dim=-1), text, atol=1e-5, rtol=0)
    torch.testing.assert_close(F.normalize(saved["video"], dim=-1), F.normalize(video, dim=-1), atol=1e-5, rtol=0)
    sim = text @ F.normalize(video, dim=-1).t()
    gaps = sim.sort(dim=1).values.diff(dim=1)
    assert gaps.min() > 1e-4 and sim.std() > 0.05  # no near-ties: a rank cannot flip within the tolerance above
    expected = retrieval_metrics(sim, torch.as_tensor(saved["caption_video"]))
    label = next(iter(metrics))
    assert label == "BLIP meanP zero-shot"  # named after the backbone that ran, not CLIP
    for direction in ("t2v", "v2t"):
        for key, value in expected[direction].items():
            assert metrics[label][direction][key] == pytest.approx(value), (direction, key)
    assert 0 < metrics[label]["t2v"]["R@1"] < 100  # the random model ranks some pairs right and some wrong


@pytest.mark.filterwarnings("ignore::models.blip.BlipTemperatureWarning")  # a Hugging Face folder's, expected
def test_retrieve_indexes_and_searches_with_a_dgl_checkpoint_trained_on_blip(blip_workspace, tmp_path, capsys):
    root, cfg, _ = blip_workspace
    folder, out = root / "blip-itm-tiny", tmp_path / "train"
    run_main(*data_flags(cfg, folder), "--do_train", "1", "--epochs", "1", "--batch_size", "3",
             "--unified_transformer_layers", "2", "--eval_every_epoch", "0", "--lr", "1e-3", "--output_dir", str(out))
    ckpt, index = out / "checkpoint_latest.pt", tmp_path / "index"
    assert retrieve.main(["index", "--videos", str(cfg.features_path), "--checkpoint", str(ckpt), "--out", str(index),
                          "--workers", "0", "--device", "cpu", "--quiet"]) == 0
    manifest = json.loads((index / "index.json").read_text())
    assert manifest["model"]["dgl_config"]["backbone"] == "blip"
    queries = list(TEST_PAIRS.values())[:3]
    capsys.readouterr()
    assert retrieve.main(["search", "--index", str(index), *queries, "--top_k", "6", "--json", "--device", "cpu",
                          "--max_words", str(MAX_WORDS)]) == 0
    answer = json.loads(capsys.readouterr().out)
    # Brute force with the checkpoint's model: every video through the evaluation frame reader, a sort.
    model = load_dgl(ckpt).eval()
    assert model.config.backbone == "blip"
    paths = sorted(cfg.features_path.glob("*.mp4"))
    with torch.no_grad():
        video = F.normalize(torch.cat([model.encode_video(read_eval_frames(p, MAX_FRAMES, SIZE.resolution)[0][None])
                                       for p in paths]), dim=-1)
        ids, _ = get_tokenizer("blip", model.clip)(queries, MAX_WORDS)
        scores = F.normalize(model.encode_text(ids), dim=-1) @ video.t()
    for row, query in zip(scores, answer["queries"]):
        values, order = row.sort(descending=True)
        assert [Path(r["path"]).name for r in query["results"]] == [paths[j].name for j in order]
        assert [r["score"] for r in query["results"]] == pytest.approx(values.tolist(), abs=1e-4)

"""`bash scripts/demo.sh --quick` through its Python entry point: the whole pipeline runs, losses fall."""
import dataclasses
import json

from apps import demo
from preprocess.make_synthetic import SyntheticConfig


def test_quick_demo_trains_and_prints_the_table(tmp_path, capsys):
    assert demo.main(["--quick", "--workdir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    table = json.loads((tmp_path / "results.json").read_text())["table"]
    assert set(table) == {"CLIP meanP zero-shot (frame mean)", "DGL-Transformer", "DGL-Linear"}
    for name in ("DGL-Transformer", "DGL-Linear"):
        assert table[name]["loss_last"] < table[name]["loss_first"], name
        assert f"| {name} |" in printed
    # The order-blind baseline cannot separate time-reversed twins beyond coding noise.
    assert abs(table["CLIP meanP zero-shot (frame mean)"]["twin"] - 0.5) < 0.1
    assert ("PASS" in printed) or ("FAIL" in printed)


def logged_losses(folder) -> list[float]:
    records = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


def test_demo_on_a_tiny_blip_trains_and_scores_twins(tmp_path):
    """`--backbone blip` end to end at the smallest size: tiny BLIP pretrained on stills (its own folder, vocab.txt
    beside it), its zero-shot frame mean, DGL and DGL-BLIP (prompt-only and fully fine-tuned, ITC only) through
    main.py --backbone blip; plumbing, not a benchmark, except that DGL-BLIP's training must lower its loss.

    The table's first-to-last loss also moves with the batches' contents (an untrained run falls too, its last
    batch being short), so each DGL-BLIP row is held against the same run with its lr at 1e-12, which sees the
    same batches in the same order: equal at the first step, lower by training alone after it."""
    recipe = dataclasses.replace(demo.pretrain_tiny_clip.QUICK, steps=300, batch_size=16, layers=1, eval_size=16,
                                 caption_batch=8)
    cfg = demo.DemoConfig(data=SyntheticConfig(train_videos=24, test_pairs=6, frames=4, size=32, captions_per_video=2,
                                               train_twins=True, workers=1),
                          clip=recipe, backbone="blip", frames=4, words=16, batch_size=8, epochs=4)
    table = demo.run_demo(cfg, tmp_path)["table"]
    blip_rows = {"DGL-BLIP", "DGL-BLIP (full fine-tune)"}
    assert set(table) == {"BLIP meanP zero-shot (frame mean)", "DGL-Transformer", "DGL-Linear", *blip_rows}
    side = json.loads((tmp_path / "tiny_blip" / "tiny_blip.pth.json").read_text())
    assert side["backbone"] == "blip" and (tmp_path / "tiny_blip" / "vocab.txt").is_file()
    for name, row in table.items():
        assert row["n_twin"] == 2 * cfg.data.test_pairs and 0.0 <= row["twin"] <= 1.0, name
        assert 0.0 <= row["t2v"]["R@1"] <= 100.0, name
    for name in ("DGL-Transformer", "DGL-Linear"):
        assert table[name]["loss_first"] > 0 and "loss_last" in table[name], name
    folder, flags = demo.demo_runs(cfg, tmp_path / "msrvtt", tmp_path / demo.BACKBONE_FILES["blip"])["DGL-BLIP"]
    demo.main_py(flags + ["--lr", "1e-12", "--output_dir", str(tmp_path / "frozen")], tmp_path / "frozen.log")
    frozen = logged_losses(tmp_path / "frozen")
    for folder in ("dgl-blip", "dgl-blip-full"):
        trained = logged_losses(tmp_path / "runs" / folder)
        assert len(trained) == len(frozen) >= 3 and abs(trained[0] - frozen[0]) < 1e-6, folder
        assert all(t < f - 0.02 for t, f in zip(trained[1:], frozen[1:])), (folder, trained, frozen)
    for name in blip_rows:
        assert table[name]["loss_last"] < table[name]["loss_first"], name
    for folder, trains_blip in (("dgl-blip", False), ("dgl-blip-full", True)):
        run = json.loads((tmp_path / "runs" / folder / "config.json").read_text())
        assert run["model"]["model"] == "dgl_blip" and run["model"]["train_backbone"] == trains_blip, folder
        assert run["train"]["blip_loss"] == {"alpha": 0.0, "momentum": 0.995, "queue_size": 0, "itm_weight": 0.0}
        assert run["eval"]["itm_rerank"] == 0
    ok, line = demo.verdict(table, cfg.margin, demo.JUDGED["blip"])
    assert line.startswith(f"{'PASS' if ok else 'FAIL'}: DGL-BLIP (full fine-tune) T2V R@1")
    assert [s.split(" twin accuracy")[0] for s in line.splitlines()[1:]] == ["DGL-BLIP (full fine-tune)",
                                                                            "DGL-Transformer"]

"""`bash scripts/demo.sh --quick` through its Python entry point: the whole pipeline runs, losses fall."""
import json

from apps import demo


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

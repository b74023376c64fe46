"""Every command line: a help line for each flag with its default shown, and user errors as one line on stderr
with exit code 2 (utils/cli.py), run as users type them: a bad flag, a missing weights file, a missing data folder."""
from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from utils import cli

ROOT = Path(__file__).resolve().parents[1]
# module -> how its parser is reached: a build_parser function, or main(argv) that builds one inline.
PARSERS = {
    "utils.config": "build_parser", "retrieve": "build_parser", "visualize": "build_parser",
    "apps.bench.cli": "build_parser", "apps.download": "build_parser",
    "preprocess.cache_frames": "main", "preprocess.compress_video": "main", "preprocess.make_synthetic": "main",
    "preprocess.pretrain_tiny_clip": "main", "apps.demo": "main", "apps.search_latency": "main",
    "apps.tokenizer_speed": "main", "apps.bench.loader_rows": "main", "apps.bench.real_size_eval": "main",
}
# What users type: the root scripts by path, the others with -m.
COMMANDS = {  # with the required flags, so that the unknown flag is what is reported
    "main.py": ["main.py", "--output_dir", "o"], "retrieve.py": ["retrieve.py", "index", "--videos", "v", "--checkpoint", "c",
                                                                  "--out", "o"],
    "visualize.py": ["visualize.py", "--checkpoint", "c", "--video", "v", "--out", "o"],
    "cache_frames": ["-m", "preprocess.cache_frames"],
    "compress_video": ["-m", "preprocess.compress_video", "--input_root", "i", "--output_root", "o"],
    "make_synthetic": ["-m", "preprocess.make_synthetic", "--out", "o"],
    "pretrain_tiny_clip": ["-m", "preprocess.pretrain_tiny_clip", "--out", "o"],
    "demo": ["-m", "apps.demo"], "bench": ["-m", "apps.bench"], "benchmark": ["-m", "apps.benchmark"],
    "search_latency": ["-m", "apps.search_latency"], "tokenizer_speed": ["-m", "apps.tokenizer_speed"],
    "loader_rows": ["-m", "apps.bench.loader_rows"], "real_size_eval": ["-m", "apps.bench.real_size_eval"],
    "download": ["-m", "apps.download"],
}


class Built(Exception):
    """Raised by the patched parse_args to hand the parser a main() built back to the test."""


def parser_of(module_name: str, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    module = importlib.import_module(module_name)
    if PARSERS[module_name] == "build_parser":
        return module.build_parser()

    def capture(self, *args, **kwargs):
        raise Built(self)

    monkeypatch.setattr(cli.ArgumentParser, "parse_args", capture)
    with pytest.raises(Built) as info:
        module.main([])
    return info.value.args[0]


def all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return [parser, *(p for action in subcommands for sub in action.choices.values() for p in all_parsers(sub))]


@pytest.mark.parametrize("module_name", PARSERS)
def test_every_flag_has_help_and_defaults_are_shown(module_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for parser in all_parsers(parser_of(module_name, monkeypatch)):
        assert isinstance(parser, cli.ArgumentParser), f"{module_name}: {parser.prog} is not utils.cli.ArgumentParser"
        shown = [a for a in parser._actions if a.help != argparse.SUPPRESS and not isinstance(a, argparse._SubParsersAction)]
        without = [a.option_strings or a.dest for a in shown if not (a.help or "").strip()]
        assert without == [], f"{parser.prog}: flags without help: {without}"
        text = " ".join(parser.format_help().split())
        for action in shown:
            if action.option_strings and not any(action.default is none for none in (None, False, argparse.SUPPRESS)) \
                    and "default" not in (action.help or ""):
                assert f"default: {action.default}" in text, f"{parser.prog} {action.option_strings}"


def test_main_help_shows_the_training_defaults() -> None:
    text = " ".join(importlib.import_module("utils.config").build_parser().format_help().split("options:", 1)[1].split())
    for flag, default in (("--batch_size", 256), ("--lr", 0.0001), ("--epochs", 20), ("--do_train", 0)):
        entry = re.split(r" (?=--\w+ (?:[A-Z_]+|\{))", text.split(f"{flag} ", 1)[1])[0]  # up to the next option
        assert f"(default: {default})" in entry, (flag, entry)


def run(args: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DGL_DEBUG")}
    environment.update(env or {}, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=300)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == cli.USAGE_ERROR, (result.returncode, result.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert ": error: " in lines[0]
    return lines[0]


@pytest.mark.parametrize("name", COMMANDS)
def test_a_bad_flag_is_one_line(name: str) -> None:
    line = one_error_line(run([*COMMANDS[name], "--no_such_flag", "1"]))  # parsing fails before anything is written
    assert "--no_such_flag" in line and "--help" in line


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    from models.clip import CLIP
    from tests.tiny_runs import TINY

    path = tmp_path_factory.mktemp("clip") / "tiny_clip.pt"
    torch.manual_seed(0)
    torch.save(CLIP(TINY).state_dict(), path)
    return path


def test_main_without_weights_names_the_flag_and_the_download(tmp_path: Path) -> None:
    line = one_error_line(run(["main.py", "--do_eval", "1", "--output_dir", str(tmp_path / "out"),
                               "--pretrained_dir", str(tmp_path)]))
    assert str(tmp_path / "ViT-B-32.pt") in line and "--pretrained_dir" in line
    assert "python -m apps.download ViT-B/32" in line
    assert not (tmp_path / "out").exists()  # nothing was started


def test_main_without_data_names_the_flag(tmp_path: Path, tiny_clip: Path) -> None:
    missing = tmp_path / "absent"
    line = one_error_line(run(["main.py", "--do_eval", "1", "--output_dir", str(tmp_path / "out"), "--datatype", "vatex",
                               "--pretrained_clip_name", str(tiny_clip), "--data_path", str(missing / "data"),
                               "--features_path", str(tmp_path)]))
    assert line.startswith(f"main.py: error: --data_path {missing / 'data'}: no such file or folder")
    line = one_error_line(run(["main.py", "--do_train", "1", "--output_dir", str(tmp_path / "out"),
                               "--pretrained_clip_name", str(tiny_clip), "--val_csv", __file__, "--train_csv", __file__,
                               "--features_path", str(missing / "videos")]))
    assert line.startswith(f"main.py: error: --features_path {missing / 'videos'}: no such file or folder")
    assert not (tmp_path / "out").exists()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    for flags, env in ((["--debug"], {}), ([], {"DGL_DEBUG": "1"})):
        result = run(["main.py", "--do_eval", "1", "--output_dir", str(tmp_path), "--pretrained_dir", str(tmp_path),
                      *flags], env=env)
        assert result.returncode != 0 and "Traceback" in result.stderr and "CLIPNotFoundError" in result.stderr


@pytest.mark.parametrize("script", ["retrieve.py", "visualize.py"])
def test_checkpoint_scripts_without_weights_or_videos(script: str, tmp_path: Path, fixture_dir: Path) -> None:
    def command(checkpoint: Path, videos: Path) -> list[str]:
        if script == "retrieve.py":
            return [script, "index", "--checkpoint", str(checkpoint), "--videos", str(videos), "--out", str(tmp_path / "i")]
        return [script, "--checkpoint", str(checkpoint), "--video", str(videos), "--out", str(tmp_path / "f.png")]

    ckpt = fixture_dir / "dgl_linear_ckpt.pth.tar"
    line = one_error_line(run(command(tmp_path / "absent.pth.tar", tmp_path)))
    assert f"--checkpoint {tmp_path / 'absent.pth.tar'}" in line
    line = one_error_line(run(command(ckpt, tmp_path / "no_videos")))
    assert str(tmp_path / "no_videos") in line and ("--videos" in line or "--video" in line)


def test_preprocessing_without_data(tmp_path: Path) -> None:
    line = one_error_line(run(["-m", "preprocess.compress_video", "--input_root", str(tmp_path / "raw"),
                               "--output_root", str(tmp_path / "out")]))
    assert f"--input_root {tmp_path / 'raw'}" in line
    line = one_error_line(run(["-m", "preprocess.cache_frames", "--datatype", "msrvtt", "--frame_cache", str(tmp_path / "c"),
                               "--data_path", str(tmp_path / "d.json"), "--val_csv", str(tmp_path / "test.csv"),
                               "--features_path", str(tmp_path / "videos")]))
    assert "--val_csv" in line and str(tmp_path / "test.csv") in line


def test_run_maps_user_errors_and_keeps_other_exits(capsys) -> None:
    def fails(error: BaseException):
        def main(argv):
            raise error
        return main

    assert cli.run(fails(FileNotFoundError("--x y: no such file\nsecond line")), [], prog="p") == 2
    assert capsys.readouterr().err == "p: error: --x y: no such file second line\n"
    assert cli.run(fails(SystemExit("--a and --b together")), [], prog="p") == 2
    assert capsys.readouterr().err == "p: error: --a and --b together\n"
    assert cli.run(lambda argv: 1, []) == 1 and cli.run(lambda argv: {"report": 1}, []) == 0
    assert cli.run(fails(KeyboardInterrupt()), [], prog="p") == cli.INTERRUPTED
    with pytest.raises(ZeroDivisionError):  # a bug is not a user error: its traceback stays
        cli.run(fails(ZeroDivisionError("x")), [])
    with pytest.raises(FileNotFoundError):
        cli.run(fails(FileNotFoundError("x")), ["--debug"])

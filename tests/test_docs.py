"""The documentation stays a front door plus short pages that point at things that exist.

README.md <= 200 lines, each docs/*.md <= 250 (docs/_incoming/ holds drafts and is exempt); relative links
and their #anchors resolve; no text about when or where it was written; and every shell block marked
`<!-- runnable -->` names scripts, sub-commands, flags and environment variables that exist (each Python
command's `--help` is run; no long job is started).
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
DOCS = [README, *PAGES]
MAX_README_LINES, MAX_PAGE_LINES = 200, 250
# Phrases that speak of when or where the text was written rather than of the project; a figure names its
# date, machine and commit instead.
BANNED = ("on the day", "so far", "this session", "a later day", "in this environment", "on this machine",
          "not run here", "measured here", "since this session")
RUNNABLE = "<!-- runnable -->"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.S)


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def without_inline_code(text: str) -> str:
    return re.sub(r"`[^`\n]*`", "", text)


def without_code(text: str) -> str:
    """The prose of a page: fenced blocks and inline code removed (commands may contain anything)."""
    return without_inline_code(FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in FENCE.sub("", page.read_text()).splitlines() if line.startswith("#")}


def test_pages_exist_and_readme_links_every_page():
    assert len(PAGES) >= 8
    linked = {target.split("#")[0] for target in LINK.findall(README.read_text())}
    assert {f"docs/{page.name}" for page in PAGES} <= linked


def test_readme_and_pages_are_short():
    assert len(README.read_text().splitlines()) <= MAX_README_LINES
    long = {relative(p): n for p in PAGES if (n := len(p.read_text().splitlines())) > MAX_PAGE_LINES}
    assert long == {}


@pytest.mark.parametrize("page", DOCS, ids=relative)
def test_relative_links_and_anchors_resolve(page):
    broken = []
    for target in LINK.findall(without_inline_code(page.read_text())):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked offline
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(target)
    assert broken == []


@pytest.mark.parametrize("page", DOCS, ids=relative)
def test_no_text_about_when_or_where_it_was_written(page):
    prose = without_code(page.read_text()).lower()
    assert [phrase for phrase in BANNED if phrase in prose] == []


def runnable_blocks(page: Path) -> list[str]:
    text = page.read_text()
    return [m.group(1) for m in FENCE.finditer(text) if text[: m.start()].rstrip().endswith(RUNNABLE)]


def commands(block: str) -> list[list[str]]:
    """Shell commands of a block: continuation lines joined, comments dropped, `source` lines skipped."""
    joined = block.replace("\\\n", " ")
    lines = [shlex.split(line, comments=True) for line in joined.splitlines()]
    return [words for words in lines if words and words[0] != "source"]


@lru_cache(maxsize=None)
def help_text(script: str, sub: tuple[str, ...]) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, script, *sub, "--help"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"python {script} {' '.join(sub)} --help: {done.stderr[-2000:]}"
    return done.stdout


def check_python(words: list[str]) -> list[str]:
    script = words[1]
    if not (ROOT / script).is_file():
        return [f"{script} does not exist"]
    rest = words[2:]
    sub = []
    while rest and re.fullmatch(r"[a-z_]+", rest[0]):  # sub-commands, e.g. retrieve.py index
        sub.append(rest.pop(0))
    text = help_text(script, tuple(sub))
    flags = {word.split("=")[0] for word in rest if word.startswith("--")}
    return [f"python {script} {' '.join(sub)}: no {flag} in its --help" for flag in sorted(flags)
            if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text)]


def check_bash(words: list[str], env: list[str]) -> list[str]:
    script = ROOT / words[1]
    if not script.is_file():
        return [f"{words[1]} does not exist"]
    sources = script.read_text() + (ROOT / "scripts" / "_launch.sh").read_text()
    return [f"{words[1]} reads no variable {name}" for name in env if not re.search(rf"\b{name}\b", sources)]


def check_command(words: list[str]) -> list[str]:
    env = []
    while words and re.fullmatch(r"[A-Za-z_]+=.*", words[0]):
        env.append(words.pop(0).split("=")[0])
    if words[0] == "export":
        return []
    if words[0] == "python":
        return check_python(words)
    if words[0] == "bash":
        return check_bash(words, env)
    return [f"unknown command {words[0]!r}"]


def test_runnable_blocks_are_found():
    found = {relative(page): len(runnable_blocks(page)) for page in DOCS if runnable_blocks(page)}
    assert found.get("README.md", 0) >= 3 and found.get("docs/data.md", 0) >= 4


@pytest.mark.parametrize("page", [p for p in DOCS if runnable_blocks(p)], ids=relative)
def test_runnable_blocks_name_what_exists(page):
    problems = [problem for block in runnable_blocks(page) for words in commands(block)
                for problem in check_command(words)]
    assert problems == []


@pytest.mark.parametrize("words, problem", [
    (["python", "preprocess/check_dataset.py", "--no_such_flag", "1"], "no --no_such_flag"),
    (["python", "preprocess/nothing_here.py"], "does not exist"),
    (["NOT_A_SETTING=1", "bash", "scripts/msrvtt.sh"], "reads no variable NOT_A_SETTING"),
])
def test_the_block_check_catches_what_does_not_exist(words, problem):
    assert any(problem in p for p in check_command(list(words)))

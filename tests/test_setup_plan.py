"""scripts/setup_plan.py, as scripts/_venv.sh uses it: the torch build and the environment chosen from this
machine's facts (a fake ``nvidia-smi`` on PATH, fake environments); nothing is installed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "setup_plan.py"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
SETUP_VARIABLES = ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHON", "DGL_VENV", "TORCH_INDEX_URL", "DGL_TORCH_INDEX")


def executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def python_with_torch(prefix: Path) -> Path:
    """``prefix/bin/python`` running this interpreter (which has torch), as an environment's python would."""
    return executable(prefix / "bin" / "python", f'#!/bin/sh\nexec {sys.executable} "$@"\n')


def fake_smi(bin_dir: Path, driver: str | None) -> Path:
    """An nvidia-smi that reports ``driver``, or (None) fails as it does when no driver is loaded."""
    if driver is None:
        body = "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver\"; exit 9"
    else:
        body = f'[ "$1" = --query-gpu=driver_version ] && echo "{driver}" || exit 3'
    return executable(bin_dir / "nvidia-smi", f"#!/bin/sh\n{body}\n")


def plan(tmp_path: Path, env: dict[str, str] | None = None, bin_dir: Path | None = None) -> dict[str, object]:
    """The script's assignments evaluated by bash, as _venv.sh does, with PATH holding only ``bin_dir`` and the basics."""
    environment = {k: v for k, v in os.environ.items() if k not in SETUP_VARIABLES}
    environment["PATH"] = os.pathsep.join([str(bin_dir or tmp_path / "empty_bin"), "/usr/bin", "/bin"])
    environment.update(env or {})
    shell = (f'plan="$({sys.executable} {SCRIPT} --venv {tmp_path / "venv"})" || exit $?; eval "$plan"; '
             'printf "%s\\n" "$PLAN_PY" "$PLAN_ENV_NOTE" "$PLAN_CREATE_VENV" "$PLAN_TORCH_NEEDED" "$PLAN_TORCH_NOTE" '
             '"$PLAN_TORCH_FALLBACK" "${#PLAN_TORCH_ARGS[@]}" "${PLAN_TORCH_ARGS[@]}"')
    result = subprocess.run(["bash", "-c", shell], env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    keys = ("python", "env_note", "create_venv", "torch_needed", "torch_note", "fallback")
    values: dict[str, object] = dict(zip(keys, lines))
    values["args"] = lines[7:7 + int(lines[6])]
    return values


def test_no_gpu_gets_the_cpu_build_from_pytorchs_index(tmp_path: Path) -> None:
    for bin_dir in (None, fake_smi(tmp_path / "broken", None).parent):  # no nvidia-smi; one that fails
        got = plan(tmp_path, bin_dir=bin_dir)
        assert got["args"] == ["torch==2.13.0", "--index-url", CPU_INDEX]
        assert got["fallback"] == "1" and "CPU build" in str(got["torch_note"]) and "DGL_TORCH_INDEX=pypi" in str(got["torch_note"])
        assert got["python"] == str(tmp_path / "venv" / "bin" / "python") and got["create_venv"] == "1"


@pytest.mark.parametrize("driver, args, build", [
    ("580.65.06", ["torch==2.13.0"], "CUDA 13.0"),
    ("535.183.01", ["torch==2.13.0", "--index-url", "https://download.pytorch.org/whl/cu126"], "CUDA 12.6"),
    ("470.256.02", ["torch==2.13.0", "--index-url", CPU_INDEX], "CPU build"),
])
def test_a_gpu_gets_a_pinned_cuda_build_its_driver_runs(tmp_path: Path, driver: str, args: list[str], build: str) -> None:
    got = plan(tmp_path, bin_dir=fake_smi(tmp_path / "bin", driver).parent)
    assert got["args"] == args and build in str(got["torch_note"]) and driver.split(".")[0] in str(got["torch_note"])
    assert got["fallback"] == ("1" if build == "CPU build" else "0")  # only the automatic CPU choice falls back


def test_the_user_chooses_the_index(tmp_path: Path) -> None:
    bin_dir = fake_smi(tmp_path / "bin", "580.1").parent
    got = plan(tmp_path, {"TORCH_INDEX_URL": "http://mirror.local/cpu"}, bin_dir)
    assert got["args"] == ["torch==2.13.0", "--index-url", "http://mirror.local/cpu"] and got["fallback"] == "0"
    assert plan(tmp_path, {"DGL_TORCH_INDEX": "pypi"})["args"] == ["torch==2.13.0"]
    assert plan(tmp_path, {"DGL_TORCH_INDEX": "cpu"}, bin_dir)["args"] == ["torch==2.13.0", "--index-url", CPU_INDEX]
    assert plan(tmp_path, {"DGL_TORCH_INDEX": "cu130"})["args"][-1] == "https://download.pytorch.org/whl/cu130"


def test_an_unknown_index_choice_is_refused(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if k not in SETUP_VARIABLES} | {"DGL_TORCH_INDEX": "rocm"}
    result = subprocess.run([sys.executable, str(SCRIPT), "--venv", str(tmp_path)], env=environment,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "DGL_TORCH_INDEX='rocm'" in result.stderr


def test_an_active_environment_with_torch_is_used_as_it_is(tmp_path: Path) -> None:
    """This interpreter has torch: as an activated venv's or conda env's python it is used, no .venv is made."""
    for variable in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        prefix = tmp_path / variable
        python_with_torch(prefix)
        got = plan(tmp_path, {variable: str(prefix)})
        assert got["python"] == str(prefix / "bin" / "python")
        assert got["torch_needed"] == "0" and got["create_venv"] == "0" and got["args"] == []
        assert f"active {'virtual' if variable == 'VIRTUAL_ENV' else 'conda'} environment {prefix}" in str(got["env_note"])
        assert "no .venv made" in str(got["env_note"])


def test_an_active_environment_without_torch_or_an_explicit_python_is_not_used(tmp_path: Path) -> None:
    no_torch = tmp_path / "plain"
    executable(no_torch / "bin" / "python", "#!/bin/sh\nexit 1\n")  # imports nothing
    got = plan(tmp_path, {"VIRTUAL_ENV": str(no_torch)})
    assert got["python"] == str(tmp_path / "venv" / "bin" / "python") and got["torch_needed"] == "1"
    with_torch = tmp_path / "env"
    python_with_torch(with_torch)
    got = plan(tmp_path, {"VIRTUAL_ENV": str(with_torch), "PYTHON": "python3"})
    assert got["python"] == str(tmp_path / "venv" / "bin" / "python")


def test_a_venv_that_has_torch_is_not_reinstalled(tmp_path: Path) -> None:
    python_with_torch(tmp_path / "venv")
    got = plan(tmp_path)
    assert got["torch_needed"] == "0" and got["create_venv"] == "0" and "torch 2." in str(got["env_note"])


def test_the_setup_scripts_parse() -> None:
    for script in ("_venv.sh", "install.sh", "test.sh", "demo.sh"):
        result = subprocess.run(["bash", "-n", str(ROOT / "scripts" / script)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (script, result.stderr)


def test_test_packages_stay_out_of_the_runtime_requirements() -> None:
    def names(file: str) -> set[str]:
        lines = (line.split("#")[0].strip() for line in (ROOT / file).read_text().splitlines())
        return {line.split(";")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower() for line in lines if line}

    test_only = {"pytest", "pytest-xdist", "pytest-randomly", "transformers", "import-linter"}
    assert names("requirements-test.txt") == test_only and not names("requirements.txt") & test_only


FAKE_PYTHON = """#!/bin/sh
# An environment's python for the set-up scripts: pip calls are logged (and fail for an index when asked);
# torch imports only once "installed".
env_dir="$(cd "$(dirname "$0")/.." && pwd)"
if [ "$1" = -m ] && [ "$2" = pip ]; then
  echo "pip $*" | cut -d' ' -f4- >> "$env_dir/pip.log"
  case "$*" in *torch==*--index-url*) [ -n "$FAIL_INDEX" ] && exit 1 ;; esac
  case "$*" in *torch==*) touch "$env_dir/torch" ;; esac
  exit 0
fi
if [ "$1" = -c ] && [ -e "$env_dir/torch" ]; then
  case "$2" in *__version__*) echo "2.13.0+fake" ;; esac
  exit 0
fi
exit 1
"""


def source_venv(tmp_path: Path, script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in SETUP_VARIABLES}
    environment.update(PATH=os.pathsep.join([str(tmp_path / "empty_bin"), "/usr/bin", "/bin"]),
                       PYTHON=sys.executable, **env)
    return subprocess.run(["bash", "-c", script], env=environment, capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_venv_sh_installs_the_chosen_torch_and_only_the_runtime_packages(tmp_path: Path) -> None:
    """scripts/_venv.sh with a stand-in python: the CPU index first; on failure the stated fall-back; runtime
    requirements only, unless a test script asks for the test packages too."""
    env_dir = tmp_path / "env"
    executable(env_dir / "bin" / "python", FAKE_PYTHON)
    result = source_venv(tmp_path, "source scripts/_venv.sh && echo \"PY=$PY\"", {"DGL_VENV": str(env_dir), "FAIL_INDEX": "1"})
    assert result.returncode == 0, result.stderr
    assert f"PY={env_dir / 'bin' / 'python'}" in result.stdout
    err = result.stderr
    assert f"[setup] installing torch==2.13.0, the CPU build from {CPU_INDEX}" in err
    assert "that index could not be used" in err and "installing torch==2.13.0 from pip's configured index instead" in err
    pip = (env_dir / "pip.log").read_text().splitlines()
    assert pip == [f"install -q torch==2.13.0 --index-url {CPU_INDEX}", "install -q torch==2.13.0",
                   f"install -q -r {ROOT / 'requirements.txt'}"]
    again = source_venv(tmp_path, "source scripts/_venv.sh", {"DGL_VENV": str(env_dir)})
    assert again.returncode == 0 and again.stderr == "" and (env_dir / "pip.log").read_text().splitlines() == pip  # set up once
    tests = source_venv(tmp_path, "DGL_TEST_REQUIREMENTS=1; source scripts/_venv.sh", {"DGL_VENV": str(env_dir)})
    assert tests.returncode == 0, tests.stderr
    assert (env_dir / "pip.log").read_text().splitlines()[-1] == \
        f"install -q -r {ROOT / 'requirements.txt'} -r {ROOT / 'requirements-test.txt'}"


def test_venv_sh_stops_when_a_chosen_index_fails(tmp_path: Path) -> None:
    env_dir = tmp_path / "env"
    executable(env_dir / "bin" / "python", FAKE_PYTHON)
    result = source_venv(tmp_path, "source scripts/_venv.sh", {"DGL_VENV": str(env_dir), "FAIL_INDEX": "1",
                                                               "TORCH_INDEX_URL": "http://mirror.local/cpu"})
    assert result.returncode == 1 and "[setup] error: installing torch failed" in result.stderr
    assert (env_dir / "pip.log").read_text().splitlines() == ["install -q torch==2.13.0 --index-url http://mirror.local/cpu"]

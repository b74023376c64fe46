"""What scripts/_venv.sh installs where, decided from the facts of this machine (standard library only: it runs
before any environment exists).

    python3 scripts/setup_plan.py --venv DIR      # prints shell assignments that _venv.sh evaluates

The environment: an active virtual environment or conda environment ($VIRTUAL_ENV, $CONDA_PREFIX) whose Python
imports torch is used as it is (unless PYTHON or DGL_VENV asks for another); otherwise DIR, created if needed.

The torch build, when torch is missing (torch 2.13.0 in every case):
  - TORCH_INDEX_URL=URL: from that index (a mirror, a CUDA build's index);
  - DGL_TORCH_INDEX=cpu | pypi | cu126 | cu130 ...: PyTorch's CPU index, pip's configured index (PyPI: the CUDA
    13.0 build on Linux, ~4.7 GB with its CUDA libraries), or PyTorch's index of that CUDA build;
  - otherwise (auto), on Linux: an NVIDIA driver >= 580 gets PyPI's CUDA 13.0 build, a driver >= 525 PyTorch's
    CUDA 12.6 build, no usable GPU the CPU build from https://download.pytorch.org/whl/cpu (if that index cannot
    be reached, _venv.sh says so and installs from pip's configured index). macOS and Windows: PyPI's build.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TORCH = "torch==2.13.0"
PYTORCH_INDEX = "https://download.pytorch.org/whl"
CUDA13_DRIVER = 580  # PyPI's Linux torch 2.13.0 wheel brings the CUDA 13.0 runtime: driver R580 or newer
CUDA12_DRIVER = 525  # CUDA 12.x builds run on R525+ (minor-version compatibility)
CUDA12_BUILD = "cu126"


@dataclass(frozen=True)
class TorchChoice:
    pip_args: tuple[str, ...]
    note: str  # one line for the user: which build, from where, and why
    fallback: bool  # when the index fails, install from pip's configured index instead (an automatic choice only)


@dataclass(frozen=True)
class Plan:
    python: str
    note: str
    create_venv: bool
    torch: TorchChoice | None  # None: torch is there already

    def shell(self) -> str:
        torch = self.torch or TorchChoice((), "", False)
        values = {
            "PLAN_PY": self.python, "PLAN_ENV_NOTE": self.note, "PLAN_CREATE_VENV": int(self.create_venv),
            "PLAN_TORCH_NEEDED": int(self.torch is not None), "PLAN_TORCH_NOTE": torch.note,
            "PLAN_TORCH_FALLBACK": int(torch.fallback),
        }
        lines = [f"{key}={shlex.quote(str(value))}" for key, value in values.items()]
        return "\n".join([*lines, f"PLAN_TORCH_ARGS=({' '.join(map(shlex.quote, torch.pip_args))})"])


def nvidia_driver(environ: Mapping[str, str]) -> int | None:
    """The NVIDIA driver's major version if ``nvidia-smi`` runs and reports one (a usable GPU), else None."""
    smi = shutil.which("nvidia-smi", path=environ.get("PATH", os.defpath))
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30, env=dict(environ))
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
    major = first.split(".")[0].strip()
    return int(major) if major.isdigit() else None


def choose_torch(environ: Mapping[str, str], system: str, driver: int | None) -> TorchChoice:
    """The pip arguments that install torch here, and the line that says what they install."""
    url = environ.get("TORCH_INDEX_URL", "").strip()
    if url:
        return TorchChoice((TORCH, "--index-url", url), f"{TORCH} from TORCH_INDEX_URL={url}", False)
    asked = environ.get("DGL_TORCH_INDEX", "auto").strip().lower() or "auto"
    if asked == "pypi":
        return TorchChoice((TORCH,), f"{TORCH} from pip's configured index (DGL_TORCH_INDEX=pypi)", False)
    if asked == "cpu" or (asked.startswith("cu") and asked[2:].isdigit()):
        return _from_pytorch(asked, f"DGL_TORCH_INDEX={asked}", fallback=False)
    if asked != "auto":
        raise ValueError(f"DGL_TORCH_INDEX={asked!r}: use auto, cpu, pypi or a CUDA build such as cu126 "
                         f"(or set TORCH_INDEX_URL to an index)")
    if system != "Linux":
        return TorchChoice((TORCH,), f"{TORCH} from pip's configured index ({system}: PyPI's build)", False)
    if driver is None:
        return _from_pytorch("cpu", "no usable NVIDIA GPU; DGL_TORCH_INDEX=pypi installs PyPI's CUDA build instead",
                             fallback=True)
    if driver >= CUDA13_DRIVER:
        return TorchChoice((TORCH,), f"{TORCH}, PyPI's CUDA 13.0 build (NVIDIA driver {driver})", False)
    if driver >= CUDA12_DRIVER:
        return _from_pytorch(CUDA12_BUILD, f"NVIDIA driver {driver} is older than the {CUDA13_DRIVER} that CUDA 13.0 needs",
                             fallback=False)
    return _from_pytorch("cpu", f"NVIDIA driver {driver} is older than the {CUDA12_DRIVER} of torch's CUDA builds: "
                         "update it for the GPU", fallback=True)


def _from_pytorch(build: str, why: str, fallback: bool) -> TorchChoice:
    url = f"{PYTORCH_INDEX}/{build}"
    kind = "CPU build" if build == "cpu" else f"CUDA {build[2:-1]}.{build[-1]} build"
    return TorchChoice((TORCH, "--index-url", url), f"{TORCH}, the {kind} from {url} ({why})", fallback)


def torch_version(python: Path) -> str | None:
    """torch.__version__ as that interpreter sees it, or None (no interpreter, or no torch)."""
    if not python.is_file():
        return None
    try:
        out = subprocess.run([str(python), "-c", "import torch; print(torch.__version__)"], capture_output=True,
                             text=True, timeout=300)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def active_environment(environ: Mapping[str, str]) -> tuple[Path, str, str] | None:
    """(its python, its kind, torch's version) of an activated venv or conda env that has torch."""
    if environ.get("PYTHON") or environ.get("DGL_VENV"):
        return None  # an explicit interpreter or folder was asked for
    for variable, kind in (("VIRTUAL_ENV", "virtual environment"), ("CONDA_PREFIX", "conda environment")):
        prefix = environ.get(variable)
        if prefix:
            python = Path(prefix) / "bin" / "python"
            version = torch_version(python)
            if version is not None:
                return python, f"{kind} {prefix}", version
    return None


def plan(venv: Path, environ: Mapping[str, str], system: str, driver: int | None) -> Plan:
    active = active_environment(environ)
    if active is not None:
        python, where, version = active
        return Plan(str(python), f"using the active {where} (torch {version}); no .venv made", False, None)
    python = venv / "bin" / "python"
    version = torch_version(python)
    if version is not None:
        return Plan(str(python), f"using {venv} (torch {version})", False, None)
    return Plan(str(python), f"using {venv}", not python.is_file(), choose_torch(environ, system, driver))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=Path, required=True, help="the folder to use when no active environment has torch")
    args = parser.parse_args(argv)
    try:
        print(plan(args.venv, os.environ, platform.system(), nvidia_driver(os.environ)).shell())
    except ValueError as err:
        print(f"[setup] error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

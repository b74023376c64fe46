"""The official code's reference outputs, in either of two layouts, and how ours are compared with them.

A *full* set is the layout of the public reference set (``tiny_clip_state_dict.pt``, ``dgl_<variant>_ckpt.pth.tar``,
``expected_<variant>.pt`` with every gradient entry). The *compact* set vendored in ``tests/fixtures`` keeps the
same numbers in less room (``tests/fixtures/make_compact.py`` writes it, its README says how):

- the official checkpoints keep only their DGL tensors; the frozen CLIP half is the tiny CLIP, upcast, so
  ``materialise`` rebuilds each file bit for bit;
- gradients with more than ``FULL_LIMIT`` entries are kept as a summary: norm, max-abs, per-row norms, fixed
  sampled entries and fixed ±1 projections, compared in ``grad_errors`` with bounds set between our float32
  noise (~1e-6 relative) and the smallest error the test must see (1e-3 relative);
- everything else (features, logits, intermediates, small gradients, the loss) is kept whole.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

FULL_LIMIT = 65536  # gradients up to this many entries are stored whole
NUM_SAMPLES = 1024
NUM_PROJECTIONS = 8
SUMMARY_SEED = 20240110
COMPACT_MARKER = "compact.json"
VARIANTS = ("transformer", "linear")


# ----------------------------------------------------------------------------------------- summaries
def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A fixed integer hash: the projection signs depend on no library's random-number stream."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def projection_signs(numel: int) -> torch.Tensor:
    """``[NUM_PROJECTIONS, numel]`` of ±1 (one hash bit per projection), float64."""
    bits = _splitmix64(np.arange(numel, dtype=np.uint64) + np.uint64(SUMMARY_SEED))
    shifts = np.arange(NUM_PROJECTIONS, dtype=np.uint64)[:, None]
    return torch.from_numpy(1.0 - 2.0 * ((bits[None, :] >> shifts) & np.uint64(1)).astype(np.float64))


def sample_index(numel: int) -> torch.Tensor:
    """``NUM_SAMPLES`` distinct flat positions, fixed by the hash."""
    order = np.argsort(_splitmix64(np.arange(numel, dtype=np.uint64) + np.uint64(SUMMARY_SEED + 1)), kind="stable")
    return torch.from_numpy(np.sort(order[:NUM_SAMPLES]).astype(np.int64))


def summarise(grad: torch.Tensor) -> dict[str, torch.Tensor]:
    """The compact record of one large gradient tensor."""
    g = grad.detach().double()
    flat = g.flatten()
    index = sample_index(flat.numel())
    return {
        "shape": torch.tensor(g.shape),
        "norm": flat.norm(),
        "max_abs": flat.abs().max(),
        "row_norms": g.reshape(g.shape[0], -1).norm(dim=1),
        "sample_index": index,
        "sample_value": flat[index].float(),
        "projection": projection_signs(flat.numel()) @ flat / flat.numel() ** 0.5,
    }


def grad_errors(name: str, ours: torch.Tensor, expected: torch.Tensor | dict[str, torch.Tensor]) -> list[str]:
    """Why ``ours`` is not the reference gradient (empty when it is), given the whole tensor or its summary.

    Every gradient: norm and row norms within 1e-4 relative; max-abs and the sampled entries by the rule
    below; each ±1 projection (scaled by 1/sqrt(n)) within 1e-4·|ref|/sqrt(n), where a 1e-3 relative error of
    random sign moves it by ~1e-3·|ref|/sqrt(n). A whole tensor also has every entry checked by the reference
    README's rule ``|ours - ref| <= 1e-5·max|ref| + 1e-3·|ref|``, which alone lets a 1e-3 relative error pass.
    """
    ours = ours.detach().double()
    summary = expected if isinstance(expected, dict) else summarise(expected)
    shape = tuple(int(s) for s in summary["shape"])
    if tuple(ours.shape) != shape and ours.numel() == int(np.prod(shape)):
        ours = ours.reshape(shape)
    if tuple(ours.shape) != shape:
        return [f"grad {name}: shape {tuple(ours.shape)} != {shape}"]
    errors = []
    if isinstance(expected, torch.Tensor):
        ref = expected.double().reshape(shape)
        if bool(((ours - ref).abs() > 1e-5 * ref.abs().max() + 1e-3 * ref.abs()).any()):
            errors.append(f"grad {name}: max error {(ours - ref).abs().max().item():.3g}")
    return errors + summary_errors(name, summarise(ours), summary)


def summary_errors(name: str, mine: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> list[str]:
    errors = []
    ref_norm, scale = float(ref["norm"]), float(ref["max_abs"])
    if abs(float(mine["norm"]) - ref_norm) > 1e-4 * ref_norm:
        errors.append(f"grad {name}: norm {float(mine['norm']):.7g} != {ref_norm:.7g}")
    if abs(float(mine["max_abs"]) - scale) > 1e-5 * scale + 1e-3 * scale:
        errors.append(f"grad {name}: max-abs {float(mine['max_abs']):.7g} != {scale:.7g}")
    rows, ref_rows = mine["row_norms"], ref["row_norms"].double()
    if bool(((rows - ref_rows).abs() > 1e-4 * ref_rows + 1e-6 * ref_norm).any()):
        worst = int((rows - ref_rows).abs().argmax())
        errors.append(f"grad {name}: row {worst} norm {float(rows[worst]):.7g} != {float(ref_rows[worst]):.7g}")
    samples, ref_samples = mine["sample_value"].double(), ref["sample_value"].double()
    if bool(((samples - ref_samples).abs() > 1e-5 * scale + 1e-3 * ref_samples.abs()).any()):
        errors.append(f"grad {name}: sampled entries differ (max {(samples - ref_samples).abs().max().item():.3g})")
    projection_error = (mine["projection"] - ref["projection"].double()).abs().max().item()
    bound = 1e-4 * ref_norm / int(np.prod(tuple(ref["shape"]))) ** 0.5
    if projection_error > bound:
        errors.append(f"grad {name}: projections differ by up to {projection_error:.3g} (bound {bound:.3g})")
    return errors


def close_errors(name: str, ours: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float = 0.0) -> list[str]:
    """``|ours - expected| <= atol + rtol·|expected|`` elementwise, with the shapes equal."""
    ours, expected = ours.detach().float(), expected.float()
    if ours.shape != expected.shape:
        return [f"{name}: shape {tuple(ours.shape)} != {tuple(expected.shape)}"]
    err = (ours - expected).abs()
    bound = atol + rtol * expected.abs()
    if bool((err <= bound).all()):
        return []
    return [f"{name}: max error {err.max().item():.3g} (worst excess {(err - bound).max().item():.3g})"]


# ---------------------------------------------------------------------------------------- file sets
def is_compact(root: Path) -> bool:
    return (root / COMPACT_MARKER).is_file()


def load_expected(root: Path, variant: str) -> dict:
    """Expected outputs: name -> tensor, and for summarised gradients ``grads/<name>`` -> summary dict."""
    if not is_compact(root):
        return torch.load(root / f"expected_{variant}.pt", weights_only=True)
    stored = torch.load(root / f"expected_{variant}.compact.pt", weights_only=True)
    return {**stored["whole"], **{f"grads/{name}": summary for name, summary in stored["summaries"].items()}}


def official_checkpoint(clip_state: dict[str, torch.Tensor], stored: dict) -> dict:
    """The official ``ckpt.pth.tar`` content from the tiny CLIP and the stored DGL tensors and key order."""
    added = stored["added"]
    state = {key: added[key] if key in added else clip_state[key[len("module.clip."):]].float() for key in stored["keys"]}
    return {**stored["meta"], "state_dict": state}


def materialise(root: Path, out: Path) -> Path:
    """A full-format directory (all files but the expected outputs) for a compact set; a full set as it is."""
    if not is_compact(root):
        return root
    out.mkdir(parents=True, exist_ok=True)
    for name in json.loads((root / COMPACT_MARKER).read_text())["copied"]:
        target = out / name
        if not target.exists():
            target.symlink_to((root / name).resolve())
    clip_state = torch.jit.load(root / "tiny_clip_jit.pt", map_location="cpu").state_dict()
    torch.save(clip_state, out / "tiny_clip_state_dict.pt")
    for variant in VARIANTS:
        stored = torch.load(root / f"dgl_{variant}_prompts.pt", weights_only=True)
        torch.save(official_checkpoint(clip_state, stored), out / f"dgl_{variant}_ckpt.pth.tar")
        (out / f"expected_{variant}.compact.pt").symlink_to((root / f"expected_{variant}.compact.pt").resolve())
    (out / COMPACT_MARKER).symlink_to((root / COMPACT_MARKER).resolve())
    return out

"""Dataset parsers: each reads its official annotation files into a `VideoTextSplit`.

A parser is `parse(cfg: DataConfig, subset: str) -> VideoTextSplit` with subset in
{"train", "val", "test"}. Register new datasets in `DATASETS`.
"""
from __future__ import annotations

from collections.abc import Callable

from dataloaders.parsers import activitynet, didemo, lsmdc, msrvtt, msvd, vatex

DATASETS: dict[str, Callable] = {
    "msrvtt": msrvtt.parse,
    "vatex": vatex.parse,
    "lsmdc": lsmdc.parse,
    "activity": activitynet.parse,
    "msvd": msvd.parse,
    "didemo": didemo.parse,
}

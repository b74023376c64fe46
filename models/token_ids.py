"""Token-id helpers the model and the loaders share, free of the tokenizer's text libraries."""
from __future__ import annotations

import torch


def trim_text_padding(input_ids: torch.Tensor) -> torch.Tensor:
    """Token ids ``[N, L]`` without the columns after the batch's last EOT (the largest id), which cannot
    reach an EOT row under the causal mask. Meant for host tensors: it reads the data."""
    return input_ids[:, : int(input_ids.argmax(dim=-1).max()) + 1]

"""A linear probe: how much a frozen encoder's features say about a label.

The encoder is not trained: each text becomes one vector (the mean of the last hidden
states over its real tokens), and only a linear layer on top is trained. Two encoders
compared with the same data, budget and seeds show which one's features hold more of the
label; the notebook writes the same steps in cells and checks them against these.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..core.model import eval_mode, unwrap


@torch.no_grad()
def verse_features(model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                   batch_size: int = 64, max_length: int = 128,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """[len(texts), H] float32 on the CPU: each text's last hidden states, averaged over its
    real tokens (``[CLS]`` and ``[SEP]`` included, padding not), in eval mode."""
    bert = unwrap(model)
    device = torch.device(device) if device is not None else next(bert.parameters()).device
    rows = []
    with eval_mode(bert):
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt").to(device)
            hidden = bert.bert(**enc).last_hidden_state.float()  # [B, T, H]
            real = enc["attention_mask"].unsqueeze(-1).float()  # [B, T, 1]
            rows.append(((hidden * real).sum(1) / real.sum(1)).cpu())
    return torch.cat(rows)


def linear_probe(features: torch.Tensor, labels: Sequence[int] | torch.Tensor, test_features: torch.Tensor,
                 test_labels: Sequence[int] | torch.Tensor, seed: int, epochs: int = 30, lr: float = 1e-2,
                 batch_size: int = 32) -> float:
    """Held-out accuracy of a linear classifier trained on frozen ``features``.

    Features are standardised with the training set's mean and standard deviation; the
    layer is initialised and the batches shuffled from ``torch.manual_seed(seed)``; Adam,
    cross-entropy, ``epochs`` passes in batches of ``batch_size``.
    """
    labels, test_labels = torch.as_tensor(labels), torch.as_tensor(test_labels)
    mean, std = features.mean(0), features.std(0) + 1e-6
    x, x_test = (features - mean) / std, (test_features - mean) / std
    torch.manual_seed(seed)
    head = nn.Linear(x.shape[1], int(labels.max()) + 1)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(epochs):
        for batch in torch.randperm(len(x)).split(batch_size):
            loss = F.cross_entropy(head(x[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return (head(x_test).argmax(-1) == test_labels).float().mean().item()

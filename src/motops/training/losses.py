"""ReID losses: ID cross-entropy with label smoothing and the batch-hard triplet loss."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class IDLoss(nn.Module):
    """Cross-entropy over training identities with label smoothing.

    The target distribution is ``(1 - eps) * one_hot(y) + eps / C``, so the loss is
    ``(1 - eps) * CE(p, y) + eps * mean_c(-log p_c)``, averaged over the batch.

    Args:
        label_smoothing: ``eps`` in ``[0, 1)``. Raising it penalizes over-confident logits
            more, which regularizes the classifier on few identities.
    """

    def __init__(self, label_smoothing: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Args: ``logits`` ``(B, C)``, ``labels`` ``(B,)`` int64 in ``0..C-1``. Returns a scalar."""
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)


def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between the rows of ``x`` ``(B, D)`` -> ``(B, B)``.

    The square root is taken of a value clamped away from zero, so gradients stay finite
    on the diagonal and for duplicate rows.
    """
    sq = (x * x).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.t())
    return d2.clamp_min(1e-12).sqrt()


class TripletLoss(nn.Module):
    """Batch-hard triplet loss (Hermans et al., 2017) on Euclidean distances.

    For every anchor, the hardest (farthest) positive and the hardest (closest) negative of
    the batch are used: ``mean(relu(d(a, p_hard) - d(a, n_hard) + margin))`` over the anchors
    that have at least one positive and one negative. A batch with no such anchor gives 0.

    Args:
        margin: Required gap between the hardest negative and the hardest positive distance.
            Raising it pushes identities further apart and keeps more triplets active.
    """

    def __init__(self, margin: float = 0.3) -> None:
        super().__init__()
        if margin <= 0:
            raise ValueError(f"margin must be > 0, got {margin}")
        self.margin = float(margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Args: ``embeddings`` ``(B, D)`` (before the BNNeck), ``labels`` ``(B,)``. Returns a scalar."""
        dist = pairwise_distances(embeddings)
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        pos = same & ~eye
        neg = ~same
        valid = pos.any(dim=1) & neg.any(dim=1)
        if not bool(valid.any()):
            return embeddings.sum() * 0.0  # keeps the graph connected for backward()
        hardest_pos = dist.masked_fill(~pos, float("-inf")).amax(dim=1)
        hardest_neg = dist.masked_fill(~neg, float("inf")).amin(dim=1)
        loss = F.relu(hardest_pos - hardest_neg + self.margin)
        return loss[valid].mean()

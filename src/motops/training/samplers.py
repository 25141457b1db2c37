"""Identity-balanced batch sampling for metric learning."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


class PKSampler:
    """Batches of ``P`` distinct identities x ``K`` instances each (``P * K`` indices).

    Usable as a ``batch_sampler`` of a :class:`torch.utils.data.DataLoader`. One pass
    (``iter``) yields ``len(self)`` = ``max(1, N // (P * K))`` batches; successive passes
    continue the same seeded random stream, so they differ but are reproducible.
    Identities with fewer than ``K`` items are sampled with replacement.

    Args:
        labels: ``(N,)`` identity label of every item (any hashable ints).
        p: Identities per batch. Raising it adds negatives to every batch.
        k: Instances per identity. Raising it adds positives to every batch.
        seed: Seed of the random stream.

    Raises:
        ValueError: ``p`` or ``k`` < 1, or fewer than ``p`` distinct identities.
    """

    def __init__(self, labels: Sequence[int] | np.ndarray, p: int, k: int, seed: int = 0) -> None:
        if p < 1 or k < 1:
            raise ValueError(f"PKSampler needs p >= 1 and k >= 1, got p={p}, k={k}")
        labels = np.asarray(labels)
        ids, inverse = np.unique(labels, return_inverse=True)
        if len(ids) < p:
            raise ValueError(
                f"PKSampler needs at least p={p} distinct identities per batch but the labels hold "
                f"only {len(ids)}; lower p (reid.p_ids) or add identities"
            )
        self.p, self.k = int(p), int(k)
        self.ids = ids
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse, minlength=len(ids)))[:-1]
        self._members = np.split(order, bounds)
        self._num_items = len(labels)
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return max(1, self._num_items // (self.p * self.k))

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(len(self)):
            yield self.sample()

    def sample(self) -> list[int]:
        """One batch: ``P * K`` item indices, grouped by identity (``K`` consecutive per id)."""
        batch: list[int] = []
        for c in self._rng.choice(len(self.ids), size=self.p, replace=False):
            members = self._members[c]
            take = self._rng.choice(members, size=self.k, replace=len(members) < self.k)
            batch.extend(int(i) for i in take)
        return batch

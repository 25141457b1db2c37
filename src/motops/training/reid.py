"""Training and evaluation of the appearance (ReID) network.

:func:`train_reid` trains :class:`~motops.models.reid.ReIDNet` on the crop set written by
:func:`motops.data.crops.build_reid_crops` with ``id_loss_weight * ID + triplet_loss_weight *
triplet`` (PK batches, Adam, linear warm-up then cosine decay, light augmentation), from scratch
or from a base checkpoint (``reid.weights``: the ``pretrain_reid`` stage's net, trained on
hundreds of synthetic identities; a user's footage often has fewer than ten). It scores the
held-out identities before and after training with :func:`evaluate_reid`, keeps the start when
training made it worse (``reid.keep_better_start``), and writes the checkpoint, a metrics JSON
and a training-curve plot.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch.nn import functional as F

from motops.config import ReidParams
from motops.data.crops import frame_keys, load_crops, read_reid_index, retrieval_metrics
from motops.errors import ConfigError, DataFormatError
from motops.models.reid import ReIDNet, count_parameters, load_reid, reid_meta, save_reid
from motops.training.losses import IDLoss, TripletLoss
from motops.training.samplers import PKSampler

#: Fewest training identities the batch-hard triplet loss can work with.
MIN_TRAIN_IDS = 2

#: Share of the training steps spent warming the learning rate up linearly from ~0.
WARMUP_FRACTION = 0.1
#: Learning rate at the end of the cosine decay, as a fraction of ``lr``.
FINAL_LR_FRACTION = 0.01
#: Zero padding before the random crop, as a fraction of the crop height (10 px at 128).
PAD_FRACTION = 0.08
#: Largest relative brightness change of the jitter (uniform in ``1 +- BRIGHTNESS``).
BRIGHTNESS = 0.2
#: Train crops are kept in memory up to this many bytes, read from disk per batch above.
PRELOAD_BYTES = 1 << 30
#: Images per forward pass when embedding the query and gallery sets.
EVAL_BATCH = 256


# --------------------------------------------------------------------------- devices and images


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` as given.

    Raises:
        ValueError: the name is not a torch device, or CUDA is asked for and not present.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"reid.device: {device!r} is not a device; use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"reid.device: {device!r} asks for CUDA but torch sees no CUDA device; use auto or cpu")
    return dev


class _CropStore:
    """Train crops by row index: in memory when small, else read from disk per batch."""

    def __init__(self, paths: Sequence[str], height: int, width: int) -> None:
        self.paths, self.height, self.width = list(paths), height, width
        small = len(self.paths) * 3 * height * width <= PRELOAD_BYTES
        self.images = torch.from_numpy(load_crops(self.paths, height, width)) if small else None

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        if self.images is not None:
            return self.images[torch.as_tensor(indices)]
        return torch.from_numpy(load_crops([self.paths[i] for i in indices], self.height, self.width))


def augment(images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Random horizontal flip, zero padding + random crop back to size, brightness jitter.

    Args:
        images: ``(B, 3, H, W)`` uint8 or float, BGR 0..255, on any device.
        rng: Random stream (seeded by the caller).

    Returns:
        ``(B, 3, H, W)`` float32 in 0..255.
    """
    x = images.float()
    b, _, h, w = x.shape
    flip = torch.as_tensor(rng.random(b) < 0.5, device=x.device)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    pad = max(1, round(PAD_FRACTION * h))
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = rng.integers(0, 2 * pad + 1, b)
    dx = rng.integers(0, 2 * pad + 1, b)
    x = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])
    gain = torch.as_tensor(rng.uniform(1 - BRIGHTNESS, 1 + BRIGHTNESS, b), dtype=x.dtype, device=x.device)
    return (x * gain[:, None, None, None]).clamp_(0, 255)


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def embed(model: ReIDNet, images: torch.Tensor, *, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """Eval-mode embeddings of ``images`` ``(N, 3, H, W)`` (uint8/float BGR 0..255) -> ``(N, D)`` on CPU."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [model(images[i : i + batch_size].to(device).float()).cpu() for i in range(0, len(images), batch_size)]
    model.train(was_training)
    if not out:
        return torch.empty((0, model.embedding_dim))
    return torch.cat(out)


def evaluate_reid(
    model: ReIDNet,
    query_df: pl.DataFrame,
    gallery_df: pl.DataFrame,
    *,
    root: str | Path | None = None,
    height: int | None = None,
    width: int | None = None,
    batch_size: int = EVAL_BATCH,
) -> dict[str, float]:
    """Score ``model`` on held-out identities: rank-1 and mAP with cosine distance.

    Args:
        model: The network (its device is used; its train/eval mode is restored).
        query_df: Index rows (``path``, ``pid``, ``sequence``, ``frame``) of the queries.
        gallery_df: Index rows of the gallery.
        root: Folder relative ``path`` values are under (the crop folder); ``None``: as given.
        height: Resize crops to this height before embedding (``None``: as stored).
        width: Resize crops to this width.
        batch_size: Images per forward pass.

    Returns:
        ``{"rank1": float, "map": float, "queries": int}`` (fractions in [0, 1]).

    Raises:
        ValueError: the query or gallery set is empty, or no query has a match in the gallery.
        DataFormatError: a crop image cannot be read.
    """
    if query_df.height == 0 or gallery_df.height == 0:
        raise ValueError(
            f"evaluate_reid needs queries and gallery items, got {query_df.height} and {gallery_df.height}"
        )

    def paths(df: pl.DataFrame) -> list[str]:
        return [str(Path(root) / p) if root is not None else p for p in df["path"].to_list()]

    q = embed(model, torch.from_numpy(load_crops(paths(query_df), height, width)), batch_size=batch_size)
    g = embed(model, torch.from_numpy(load_crops(paths(gallery_df), height, width)), batch_size=batch_size)
    qk, gk = frame_keys(query_df, gallery_df)
    return retrieval_metrics(q, g, query_df["pid"].to_numpy(), gallery_df["pid"].to_numpy(), qk, gk)


# --------------------------------------------------------------------------- training


def _load_base(path: str | Path) -> tuple[ReIDNet, dict[str, Any]]:
    """The base checkpoint of ``reid.weights``, or a :class:`ConfigError` naming the key and the file."""
    try:
        return load_reid(path)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"reid.weights: {exc}; give a checkpoint made by the pretrain_reid stage or null") from exc


def _lr_factor(step: int, total: int) -> float:
    """Linear warm-up over :data:`WARMUP_FRACTION` of ``total``, then cosine to :data:`FINAL_LR_FRACTION`."""
    warm = max(1, round(WARMUP_FRACTION * total))
    if step < warm:
        return (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def train_reid(
    crops_dir: str | Path,
    params: ReidParams,
    *,
    out_dir: str | Path,
    metrics_path: str | Path,
    plot_path: str | Path,
    device: str | None = None,
    max_steps: int | None = None,
    progress: bool = True,
    base_weights: str | Path | None = None,
) -> dict[str, Any]:
    """Train the ReID net on a crop set (from scratch or a base checkpoint); score it on the held-out identities.

    Args:
        crops_dir: Folder written by :func:`motops.data.crops.build_reid_crops`.
        params: The ``reid`` section of ``params.yaml``: input size, embedding size, epochs,
            P x K batches, optimizer, loss weights, margin, label smoothing, device, seed.
        out_dir: Where ``reid.pt`` is written (see :func:`motops.models.reid.save_reid`).
        metrics_path: JSON file for the metrics (see Returns).
        plot_path: PNG with the loss and rank-1/mAP curves per epoch.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda[:N]``; ``None``: ``params.device``.
        max_steps: Stop after at most this many optimizer steps (the learning-rate schedule is
            fit to the shorter run); ``None``: ``params.epochs`` full epochs. An epoch is
            ``max(1, N // (P * K))`` steps for ``N`` training crops.
        progress: Show a tqdm bar per epoch.
        base_weights: A checkpoint written by :func:`motops.models.reid.save_reid` to start
            from (``None``: ``params.weights``, and from scratch when that is ``None`` too).
            Its layers except the ID classifier are loaded; the classifier is new (the
            footage's identities are not the base's). Its input size and architecture win
            over ``params``. With ``params.keep_better_start``, the starting weights are kept
            when the trained ones score a lower held-out mAP.

    Returns:
        The metrics written to ``metrics_path``: ``rank1``, ``map`` (trained, fractions),
        ``untrained_rank1``, ``untrained_map`` (same seed, before the first step), ``steps``,
        ``epochs``, ``train_ids``, ``heldout_ids``, ``train_crops``, ``query_crops``,
        ``gallery_crops``, ``parameters`` (without the classifier), ``final_id_loss``,
        ``final_triplet_loss`` (means over the last epoch).

    Raises:
        DataFormatError: the crop index is missing or empty, or a split has no rows.
        DataFormatError: fewer than two training identities.
        ConfigError: both loss weights 0, or ``max_steps`` < 1.
        ValueError: a bad device.
    """
    from tqdm import tqdm

    crops_dir = Path(crops_dir)
    index = read_reid_index(crops_dir)
    train_df = index.filter(pl.col("split") == "train")
    query_df = index.filter(pl.col("split") == "query")
    gallery_df = index.filter(pl.col("split") == "gallery")
    for name, df in (("train", train_df), ("query", query_df), ("gallery", gallery_df)):
        if df.height == 0:
            raise DataFormatError(crops_dir / "index.parquet", f"no '{name}' crops; rebuild the crop set")
    train_pids = np.unique(train_df["pid"].to_numpy())
    if len(train_pids) < MIN_TRAIN_IDS:
        raise DataFormatError(
            crops_dir / "index.parquet",
            f"holds {len(train_pids)} training identities; the triplet loss needs at least {MIN_TRAIN_IDS} "
            f"(lower prepare.reid_heldout_fraction or add footage with more people)",
        )
    # a user's own footage may hold fewer people than a batch asks for (PETS09-S2L1's first 400
    # frames: 7 after the held-out ones): then every identity is in every batch
    p_ids = min(params.p_ids, len(train_pids))
    if params.id_loss_weight == 0 and params.triplet_loss_weight == 0:
        raise ConfigError("reid.id_loss_weight and reid.triplet_loss_weight are both 0: nothing to train")
    if max_steps is not None and max_steps < 1:
        raise ConfigError(f"reid.max_steps must be >= 1, got {max_steps}")
    dev = resolve_device(params.device if device is None else device)
    base_weights = params.weights if base_weights is None else base_weights
    base = _load_base(base_weights) if base_weights is not None else None
    if base is not None:
        h, w = (int(v) for v in base[1]["input_size"])
        arch = {k: base[1][k] for k in ("stem_channels", "stage_channels", "stage_blocks")}
        embedding_dim = int(base[1]["embedding_dim"])
    else:
        h, w = params.height, params.width
        arch = {"stem_channels": params.channels[0], "stage_channels": tuple(params.channels[1:]),
                "stage_blocks": tuple(params.blocks)}
        embedding_dim = params.embedding_dim

    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    labels = np.searchsorted(train_pids, train_df["pid"].to_numpy())
    store = _CropStore(train_df["path"].to_list(), h, w)
    query_images = torch.from_numpy(load_crops(query_df["path"].to_list(), h, w))
    gallery_images = torch.from_numpy(load_crops(gallery_df["path"].to_list(), h, w))
    qk, gk = frame_keys(query_df, gallery_df)
    q_pids, g_pids = query_df["pid"].to_numpy(), gallery_df["pid"].to_numpy()

    def evaluate(net: ReIDNet) -> dict[str, float]:
        return retrieval_metrics(embed(net, query_images), embed(net, gallery_images), q_pids, g_pids, qk, gk)

    model = ReIDNet(embedding_dim, num_classes=len(train_pids), **arch)
    if base is not None:
        state = {k: v for k, v in base[0].state_dict().items() if not k.startswith("classifier.")}
        model.load_state_dict(state, strict=False)
    model = model.to(dev)
    start_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    sampler = PKSampler(labels, p_ids, params.k_instances, seed=params.seed)
    steps_per_epoch = len(sampler)
    total = params.epochs * steps_per_epoch
    if max_steps is not None:
        total = min(total, max_steps)
    epochs = math.ceil(total / steps_per_epoch)
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=params.lr, weight_decay=params.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, total))
    id_loss, triplet_loss = IDLoss(params.label_smoothing), TripletLoss(params.triplet_margin)
    label_tensor = torch.as_tensor(labels, dtype=torch.long)

    untrained = evaluate(model)
    history: list[dict[str, float]] = [{"epoch": 0, **untrained}]
    step = 0
    model.train()
    for epoch in range(1, epochs + 1):
        n = min(steps_per_epoch, total - step)
        sums = {"id": 0.0, "triplet": 0.0, "total": 0.0}
        with tqdm(total=n, disable=not progress, desc=f"reid {epoch}/{epochs}", unit="step") as bar:
            for _ in range(n):
                batch = sampler.sample()
                x = augment(store.batch(batch).to(dev), rng)
                y = label_tensor[batch].to(dev)
                feat, logits = model(x)
                l_id, l_tri = id_loss(logits, y), triplet_loss(feat, y)
                loss = params.id_loss_weight * l_id + params.triplet_loss_weight * l_tri
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                values = {"id": l_id.item(), "triplet": l_tri.item(), "total": loss.item()}
                for key, value in values.items():
                    sums[key] += value
                bar.set_postfix(id=f"{values['id']:.3f}", tri=f"{values['triplet']:.3f}")
                bar.update(1)
        scores = evaluate(model)
        history.append({"epoch": epoch, **{f"{k}_loss": v / n for k, v in sums.items()}, **scores})

    final = history[-1]
    kept_start = params.keep_better_start and untrained["map"] > final["map"]
    if kept_start:
        model.load_state_dict(start_state)
    out_dir = Path(out_dir)
    meta = reid_meta(
        model,
        height=h,
        width=w,
        extra={"train_ids": len(train_pids), "steps": step, "seed": params.seed, "device": str(dev),
               "base": None if base is None else str(base_weights), "kept_start": kept_start},
    )
    save_reid(out_dir / "reid.pt", model, meta)
    chosen = untrained if kept_start else final
    metrics: dict[str, Any] = {
        "rank1": chosen["rank1"],
        "map": chosen["map"],
        "trained_rank1": final["rank1"],
        "trained_map": final["map"],
        "untrained_rank1": untrained["rank1"],
        "untrained_map": untrained["map"],
        "base": None if base is None else str(base_weights),
        "base_train_ids": None if base is None else base[1].get("train_ids"),
        "kept_start": kept_start,
        "input_size": [h, w],
        "steps": step,
        "epochs": epochs,
        "train_ids": len(train_pids),
        "p_ids": p_ids,
        "heldout_ids": int(np.unique(np.concatenate([q_pids, g_pids])).size),
        "train_crops": train_df.height,
        "query_crops": query_df.height,
        "gallery_crops": gallery_df.height,
        "parameters": count_parameters(model),
        "final_id_loss": final["id_loss"],
        "final_triplet_loss": final["triplet_loss"],
    }
    metrics_path = Path(metrics_path)
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    plot_training_curves(history, plot_path)
    return metrics


def plot_training_curves(history: Sequence[dict[str, float]], path: str | Path) -> Path:
    """Write a PNG: losses per epoch (left) and held-out rank-1/mAP per epoch, epoch 0 untrained (right).

    Args:
        history: One dict per epoch: ``epoch``, ``rank1``, ``map`` and, from epoch 1,
            ``id_loss``, ``triplet_loss``, ``total_loss``.
        path: Destination PNG (parent folders are created).

    Returns:
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_rank = fig.subplots(1, 2)
    trained = [h for h in history if "total_loss" in h]
    for key, label in (("id_loss", "ID"), ("triplet_loss", "triplet"), ("total_loss", "total")):
        ax_loss.plot([h["epoch"] for h in trained], [h[key] for h in trained], marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="training losses")
    ax_loss.legend()
    epochs = [h["epoch"] for h in history]
    ax_rank.plot(epochs, [h["rank1"] for h in history], marker="o", label="rank-1")
    ax_rank.plot(epochs, [h["map"] for h in history], marker="s", label="mAP")
    ax_rank.set(xlabel="epoch (0: untrained)", ylabel="fraction", title="held-out identities", ylim=(0, 1.02))
    ax_rank.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path

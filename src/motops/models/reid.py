"""The appearance (ReID) network: a compact ResNet-style CNN with a BNNeck.

Input convention (the same for training, ONNX export and the tracking runtime):
``(B, 3, H, W)`` float32, **BGR** channel order (as OpenCV decodes images), values in
``0..255``. The network normalizes inside (``(x - mean) / std`` with :data:`BGR_MEAN` and
:data:`BGR_STD`, ImageNet statistics in BGR order, scaled to 0..255), so callers never
preprocess beyond resizing to ``H x W`` (default ``128 x 64``). Any ``H, W`` that are
multiples of 16 work (global pooling); the trained size is recorded in the checkpoint meta.

Outputs:
    * train mode: ``(embedding, logits)``: ``embedding`` ``(B, D)`` taken *before* the
      BNNeck's BatchNorm (what the triplet loss sees), ``logits`` ``(B, num_classes)``
      from the classifier after the BatchNorm (what the ID loss sees), or ``None`` when the
      net was built without a classifier.
    * eval mode: ``(B, D)`` L2-normalized embeddings taken *after* the BatchNorm (the
      BNNeck inference feature), ready for cosine distance ``1 - a @ b.T``.

The graph uses only Conv, BatchNorm, ReLU, MaxPool, GlobalAveragePool, Gemm and
ReduceL2/Div, so ``torch.onnx.export`` (opset >= 11) handles it with a dynamic batch axis.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

#: Per-channel mean, BGR order, in 0..255 (ImageNet statistics).
BGR_MEAN: tuple[float, float, float] = (0.406 * 255, 0.456 * 255, 0.485 * 255)
#: Per-channel standard deviation, BGR order, in 0..255 (ImageNet statistics).
BGR_STD: tuple[float, float, float] = (0.225 * 255, 0.224 * 255, 0.229 * 255)

#: Channels of the stem and of the three residual stages when none are given: the first
#: net motops shipped (128 x 64 crops), and what a checkpoint without architecture keys in
#: its meta is loaded as. ``params.yaml``'s default (``reid.channels``) is a quarter as wide.
STEM_CHANNELS = 32
STAGE_CHANNELS: tuple[int, int, int] = (64, 128, 256)
#: Residual blocks per stage; the last stage is deeper because it is cheap (8 x 4 pixels).
STAGE_BLOCKS: tuple[int, int, int] = (1, 1, 2)

#: Checkpoint format version written by :func:`save_reid`.
CHECKPOINT_VERSION = 1


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet basic block)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ReIDNet(nn.Module):
    """Compact ResNet-style appearance network with a BNNeck.

    Layout (defaults, for a ``128 x 64`` input; about 2.4 M parameters at D=256 without the
    classifier): stem conv 3x3/2 (32 ch) + max-pool/2 -> ``32 x 16``; stage 1 (64 ch,
    ``32 x 16``), stage 2 (128 ch, ``16 x 8``), stage 3 (256 ch, ``8 x 4``); global average
    pooling -> 256; a linear projection to ``embedding_dim`` when it differs from the last
    stage's channels; BNNeck: BatchNorm1d (no shift, as in "Bag of Tricks") -> bias-free linear
    classifier. ``params.yaml`` builds it at a quarter of that width on ``64 x 32`` crops
    (0.6 M parameters, 1/14 of the time per crop).

    Args:
        embedding_dim: Size ``D`` of the embedding.
        num_classes: Training identities for the ID-loss classifier; ``None`` builds the net
            without a classifier (inference, export).
        stem_channels: Channels of the stem convolution.
        stage_channels: Channels of each residual stage; the first keeps the stem's
            resolution, each further one halves it.
        stage_blocks: Residual blocks per stage (as long as ``stage_channels``).

    Shapes:
        input ``(B, 3, H, W)`` float32 BGR in 0..255; train mode -> ``((B, D), (B, C) | None)``;
        eval mode -> ``(B, D)`` with unit L2 norm.
    """

    #: It takes BGR pixels in 0..255 and normalises inside (read by the runtime's ReID backend).
    takes_bgr_pixels = True

    def __init__(
        self,
        embedding_dim: int = 256,
        num_classes: int | None = None,
        *,
        stem_channels: int = STEM_CHANNELS,
        stage_channels: tuple[int, ...] = STAGE_CHANNELS,
        stage_blocks: tuple[int, ...] = STAGE_BLOCKS,
    ) -> None:
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 or None, got {num_classes}")
        if len(stage_channels) != len(stage_blocks) or not stage_channels:
            raise ValueError(
                f"stage_channels {stage_channels} and stage_blocks {stage_blocks} must be equally long, not empty"
            )
        if min(stem_channels, *stage_channels, *stage_blocks) < 1:
            raise ValueError("every channel count and block count must be >= 1")
        self.embedding_dim = int(embedding_dim)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.stem_channels = int(stem_channels)
        self.stage_channels = tuple(int(c) for c in stage_channels)
        self.stage_blocks = tuple(int(b) for b in stage_blocks)
        self.register_buffer("mean", torch.tensor(BGR_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(BGR_STD).view(1, 3, 1, 1))
        self.stem = nn.Sequential(
            nn.Conv2d(3, self.stem_channels, 3, 2, 1, bias=False),
            nn.BatchNorm2d(self.stem_channels),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        stages = []
        c_in = self.stem_channels
        for i, (c_out, blocks) in enumerate(zip(self.stage_channels, self.stage_blocks, strict=True)):
            layers = [_BasicBlock(c_in, c_out, 1 if i == 0 else 2)]
            layers += [_BasicBlock(c_out, c_out, 1) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.project: nn.Module = (
            nn.Identity() if embedding_dim == c_in else nn.Linear(c_in, embedding_dim, bias=False)
        )
        self.bnneck = nn.BatchNorm1d(embedding_dim)
        self.bnneck.bias.requires_grad_(False)  # no shift: keeps the BN feature centred for cosine
        self.classifier = None if num_classes is None else nn.Linear(embedding_dim, num_classes, bias=False)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # zero-init the last BN of each residual branch: blocks start as identities
        for m in self.modules():
            if isinstance(m, _BasicBlock):
                nn.init.zeros_(m.bn2.weight)
        if isinstance(self.project, nn.Linear):
            nn.init.kaiming_normal_(self.project.weight, mode="fan_out")
        if self.classifier is not None:
            nn.init.normal_(self.classifier.weight, std=0.001)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding before the BNNeck.

        Args:
            x: ``(B, 3, H, W)`` float32, BGR, 0..255.

        Returns:
            ``(B, D)`` unnormalized embeddings.
        """
        x = (x - self.mean) / self.std
        x = self.stages(self.stem(x))
        return self.project(torch.flatten(self.pool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """Train mode: ``(embedding (B, D), logits (B, C) or None)``; eval mode: ``(B, D)`` unit-norm."""
        feat = self.features(x)
        neck = self.bnneck(feat)
        if self.training:
            logits = self.classifier(neck) if self.classifier is not None else None
            return feat, logits
        return F.normalize(neck, p=2.0, dim=1, eps=1e-12)


def architecture(model: ReIDNet) -> dict[str, Any]:
    """The constructor arguments that fix the layer shapes (written into every checkpoint's meta)."""
    return {
        "stem_channels": model.stem_channels,
        "stage_channels": list(model.stage_channels),
        "stage_blocks": list(model.stage_blocks),
    }


def count_parameters(model: nn.Module, *, include_classifier: bool = False) -> int:
    """Number of parameters of ``model`` (by default without the ID classifier, which
    only exists for training and grows with the number of training identities)."""
    total = sum(p.numel() for p in model.parameters())
    classifier = getattr(model, "classifier", None)
    if not include_classifier and classifier is not None:
        total -= sum(p.numel() for p in classifier.parameters())
    return total


def reid_meta(
    model: ReIDNet, *, height: int, width: int, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The checkpoint meta that describes ``model``'s input and output.

    Args:
        model: The network.
        height: Input height the net was trained at, pixels.
        width: Input width the net was trained at, pixels.
        extra: More plain-typed entries (str, int, float, bool, lists/dicts of those).

    Returns:
        ``{"version", "input_size": [height, width], "channel_order": "BGR", "pixel_range":
        [0, 255], "mean", "std", "embedding_dim", "num_classes", ...extra}``.
    """
    meta: dict[str, Any] = {
        "version": CHECKPOINT_VERSION,
        "input_size": [int(height), int(width)],
        "channel_order": "BGR",
        "pixel_range": [0, 255],
        "mean": [float(v) for v in BGR_MEAN],
        "std": [float(v) for v in BGR_STD],
        "embedding_dim": model.embedding_dim,
        "num_classes": model.num_classes,
        **architecture(model),
    }
    meta.update(extra or {})
    return meta


def save_reid(path: str | Path, model: ReIDNet, meta: Mapping[str, Any]) -> Path:
    """Write ``model`` and ``meta`` with :func:`torch.save` (tensors and plain types only).

    Args:
        path: Destination ``.pt`` file; parent folders are created.
        model: The network (its ``state_dict`` is saved on CPU).
        meta: Plain-typed description, typically from :func:`reid_meta`. ``embedding_dim``
            and ``num_classes`` are overwritten from ``model`` so the file always loads.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(meta)
    meta["embedding_dim"] = model.embedding_dim
    meta["num_classes"] = model.num_classes
    meta.update(architecture(model))
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "meta": meta}, path)
    return path


def load_reid(path: str | Path, *, map_location: str | torch.device = "cpu") -> tuple[ReIDNet, dict[str, Any]]:
    """Read a checkpoint written by :func:`save_reid` (``weights_only=True``: no code runs).

    Args:
        path: The ``.pt`` file.
        map_location: Device to load the tensors on.

    Returns:
        ``(model, meta)`` with ``model`` in eval mode.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a ReID checkpoint or its weights do not fit the net.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ReID checkpoint not found")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing
        raise ValueError(f"{path}: not a readable ReID checkpoint ({exc})") from exc
    if not isinstance(blob, dict) or "state_dict" not in blob or "meta" not in blob:
        raise ValueError(f"{path}: not a ReID checkpoint; expected a dict with 'state_dict' and 'meta'")
    meta = dict(blob["meta"])
    try:
        model = ReIDNet(
            embedding_dim=int(meta["embedding_dim"]),
            num_classes=meta.get("num_classes"),
            stem_channels=int(meta.get("stem_channels", STEM_CHANNELS)),
            stage_channels=tuple(meta.get("stage_channels", STAGE_CHANNELS)),
            stage_blocks=tuple(meta.get("stage_blocks", STAGE_BLOCKS)),
        )
        model.load_state_dict(blob["state_dict"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: checkpoint does not match ReIDNet: {exc}") from exc
    model.to(map_location)
    model.eval()
    return model, meta

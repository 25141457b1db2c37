"""Small models and frames the tests build for themselves (no weights are ever downloaded)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np


def scene(seed: int = 0, shape: tuple[int, int] = (192, 320)) -> np.ndarray:
    """A non-square BGR frame (so the letterbox pads) with coloured blocks on grey."""
    rng = np.random.default_rng(seed)
    frame = np.full((*shape, 3), 90, np.uint8)
    for _ in range(14):
        x, y = int(rng.integers(0, shape[1] - 20)), int(rng.integers(0, shape[0] - 20))
        w, h = int(rng.integers(10, 60)), int(rng.integers(20, 90))
        cv2.rectangle(frame, (x, y), (x + w, y + h), tuple(int(c) for c in rng.integers(0, 255, 3)), -1)
    return frame


def tiny_yolo(folder: Path, imgsz: int) -> Path:
    """A YOLOv8n from the model YAML, saved as ``folder/det.pt``, whose scores are not saturated.

    Random weights give nearly constant, saturated class scores, which makes box comparisons
    meaningless: the head's last layers are re-initialised (small weights, a negative class
    bias) and the batch-norm statistics are set from four synthetic frames.
    """
    import torch
    from ultralytics import YOLO

    from motops.runtime.backends import letterbox, to_blob

    assert os.environ.get("YOLO_OFFLINE") == "1"
    torch.manual_seed(0)
    model = YOLO("yolov8n.yaml")
    net = model.model
    head = net.model[-1]
    for seq in (*head.cv2, *head.cv3):
        torch.nn.init.normal_(seq[-1].weight, 0.0, 0.05)
    for seq in head.cv3:
        torch.nn.init.constant_(seq[-1].bias, -2.0)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 1.0  # one training-mode pass sets the running statistics
    net.train()
    batch = np.concatenate([to_blob(letterbox(scene(seed), (imgsz, imgsz))[0]) for seed in range(4)])
    with torch.no_grad():
        net(torch.from_numpy(batch))
    net.eval()
    pt = folder / "det.pt"
    model.save(pt)
    return pt


def tiny_reid_net():
    """A ``(B, 3, H, W) -> (B, 32)`` appearance net, small enough to run in milliseconds (seeded)."""
    import torch

    class TinyReID(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = torch.nn.Sequential(
                torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
                torch.nn.BatchNorm2d(8),
                torch.nn.ReLU(),
                torch.nn.Conv2d(8, 16, 3, stride=2, padding=1),
                torch.nn.ReLU(),
                torch.nn.AdaptiveAvgPool2d(1),
                torch.nn.Flatten(),
            )
            self.fc = torch.nn.Linear(16, 32)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.features(x))

    torch.manual_seed(0)
    return TinyReID().eval()


def save_tiny_base_reid(path: Path, seed: int = 0) -> Path:
    """An untrained, very narrow :class:`~motops.models.reid.ReIDNet` checkpoint (64 x 32 crops,
    32-d embeddings) standing in for the ``pretrain_reid`` stage's ``models/base/reid.pt``."""
    import torch

    from motops.models.reid import ReIDNet, reid_meta, save_reid

    torch.manual_seed(seed)
    net = ReIDNet(32, num_classes=5, stem_channels=4, stage_channels=(8, 8, 16))
    return save_reid(path, net, reid_meta(net, height=64, width=32, extra={"train_ids": 5}))


def export_tiny_reid(net, path: Path) -> Path:
    """``net`` as an ONNX file with a dynamic batch axis (input ``crops``, output ``embeddings``, 128 x 64)."""
    import torch

    torch.onnx.export(
        net,
        torch.zeros(1, 3, 128, 64),
        str(path),
        opset_version=17,
        input_names=["crops"],
        output_names=["embeddings"],
        dynamic_axes={"crops": {0: "batch"}, "embeddings": {0: "batch"}},
        dynamo=False,
    )
    return path


def write_tiny_bundle(folder: Path, version: str, *, models_dir: Path | None = None) -> Path:
    """An intact engine bundle at ``folder`` with ``model_version`` ``version`` (BoT-SORT + ReID, 160 x 160).

    The tiny YOLOv8n ONNX (:func:`tiny_yolo`, exported by Ultralytics) and the tiny ReID ONNX
    are built once into ``models_dir`` (default ``folder.parent / "tiny-models"``) and reused
    by later calls with the same ``models_dir``, so many versions cost one export.
    """
    from ultralytics import YOLO

    from motops.export.bundle import write_bundle

    models_dir = Path(models_dir) if models_dir is not None else Path(folder).parent / "tiny-models"
    models_dir.mkdir(parents=True, exist_ok=True)
    detector, reid = models_dir / "det.onnx", models_dir / "reid.onnx"
    if not detector.is_file():
        pt = tiny_yolo(models_dir, 160)
        exported = Path(YOLO(str(pt)).export(format="onnx", imgsz=160, opset=17, simplify=False, verbose=False))
        if exported != detector:
            exported.replace(detector)
    if not reid.is_file():
        export_tiny_reid(tiny_reid_net(), reid)
    return write_bundle(
        folder,
        files={"detector": detector, "reid": reid},
        tracker={"tracker": "botsort", "conf": 0.1, "classes": None, "detect_every": 2},
        model_version=str(version),
        input_shapes={"detector": [1, 3, 160, 160], "reid": ["batch", 3, 128, 64]},
        class_names={i: f"class{i}" for i in range(80)},
        metrics={"idf1": 0.7},
        backends={"onnxruntime": {"built": True, "reason": None}},
        extra={"made_by": "tests.helpers.write_tiny_bundle"},
    )



def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(folder: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[SimpleNamespace]:
    """``mlflow server`` on 127.0.0.1 (SQLite store and local proxied artifacts under ``folder``), started
    in the background with ``args`` added and ``env`` over the environment (less any ``MLFLOW_*``);
    stopped, with its worker processes, at the end. Wait for it with :func:`wait_healthy`."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    full_env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job-runner processes: the tests queue no jobs
    full_env.update(env or {})
    log = open(folder / "server.log", "wb")  # noqa: SIM115 -- kept open for the server's lifetime
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", *args, "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "artifacts")],
        cwd=folder, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        yield SimpleNamespace(proc=proc, url=f"http://127.0.0.1:{port}", log=folder / "server.log")
    finally:
        # The server runs uvicorn in child processes: stop the whole session this helper started.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def wait_healthy(server: SimpleNamespace, timeout_s: float) -> str:
    """``server.url`` once its ``/health`` answers 200; fails the test with the server's log otherwise."""
    import pytest

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"mlflow server exited ({server.proc.returncode}):\n{server.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as response:
                if response.status == 200:
                    return server.url
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"mlflow server not healthy after {timeout_s} s:\n{server.log.read_text()[-3000:]}")


def yaml_docs(path: Path) -> list[dict]:
    """The YAML documents of ``path`` (empty ones dropped); fails when there is none."""
    import yaml

    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} holds no YAML document"
    return docs

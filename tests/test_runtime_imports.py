"""The runtime is what a device installs: it must import nothing from the build side nor the training stack."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import motops.runtime

RUNTIME_DIR = Path(motops.runtime.__file__).parent
RUNTIME_MODULES = sorted(
    "motops.runtime" + ("" if p.stem == "__init__" else f".{p.stem}") for p in RUNTIME_DIR.glob("*.py")
)
#: Packages of motops the runtime never imports (the build side).
FORBIDDEN_MOTOPS: tuple[str, ...] = ("export", "training", "registry", "evaluation")
#: Top-level modules that must not be loaded by importing the runtime (nor by running an exported engine).
HEAVY: tuple[str, ...] = (
    "torch",
    "torchvision",
    "ultralytics",
    "mlflow",
    "prefect",
    "dvc",
    "great_expectations",
    "polars",
)


def _imported_names(tree: ast.AST, package: str) -> list[tuple[int, str]]:
    """``(line, absolute module)`` of every import in a module of ``package``, lazy ones included."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # ``from motops import export`` names the package in the alias
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def test_runtime_modules_import_nothing_from_the_build_side() -> None:
    assert len(RUNTIME_MODULES) >= 10, RUNTIME_MODULES
    bad = []
    for path in sorted(RUNTIME_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, module in _imported_names(tree, "motops.runtime"):
            parts = module.split(".")
            if parts[0] == "motops" and len(parts) > 1 and parts[1] in FORBIDDEN_MOTOPS:
                bad.append(f"{path.name}:{line}: imports {module}")
    assert not bad, "\n".join(bad)


def test_the_import_checker_sees_lazy_and_aliased_imports() -> None:
    """The AST check above would catch the ways such an import is written (so it can fail)."""
    source = (
        "def f():\n    from motops.export import bundle\n"
        "import motops.training.reid as r\n"
        "from motops import registry\n"
        "from ..evaluation import run\n"
    )
    modules = [m for _, m in _imported_names(ast.parse(source), "motops.runtime")]
    assert "motops.export" in modules and "motops.training.reid" in modules
    assert "motops.registry" in modules and "motops.evaluation" in modules


def test_fleet_and_registry_do_not_import_export() -> None:
    src = RUNTIME_DIR.parent
    bad = []
    for package in ("fleet", "registry"):
        for path in sorted((src / package).glob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for line, module in _imported_names(tree, f"motops.{package}"):
                if module == "motops.export" or module.startswith("motops.export."):
                    bad.append(f"{package}/{path.name}:{line}: imports {module}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("extra", [[], ["cli"]])
def test_importing_the_runtime_loads_no_heavy_module(extra: list[str]) -> None:
    """In a fresh interpreter: every runtime module (and the ``motops`` CLI module) leaves the training stack out."""
    modules = [*RUNTIME_MODULES, *(["motops.cli", "motops.fleet.cli", "motops.fleet.agent"] if extra else [])]
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_a_training_command_without_the_train_extra_says_which_extra_in_one_line(tmp_path: Path) -> None:
    """``motops ingest`` where the training stack is not installed: one line naming the extra, exit 2."""
    code = (
        "import sys\n"
        f"for m in {list(HEAVY)!r}: sys.modules[m] = None  # as on an edge install: import fails\n"
        "sys.argv = ['motops', 'ingest']\n"
        "from motops.cli import main\n"
        "main()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                         cwd=tmp_path)  # no params.yaml there: the built-in defaults
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert re.fullmatch(
        r"error: motops ingest needs the 'train' extra, which is not installed here \(no module named '\w+'\); "
        r"install it with: pip install 'motops\[train\]'",
        lines[0],
    ), lines[0]


def test_a_mot_sequence_folder_opens_without_the_training_stack(tmp_path: Path) -> None:
    """``motops track SEQ`` reads ``seqinfo.ini`` for the frame rate; that must not need polars."""
    import cv2
    import numpy as np

    seq = tmp_path / "SEQ-01"
    (seq / "img1").mkdir(parents=True)
    for i in (1, 2):
        cv2.imwrite(str(seq / "img1" / f"{i:06d}.jpg"), np.full((48, 64, 3), 40 * i, np.uint8))
    (seq / "seqinfo.ini").write_text(
        "[Sequence]\nname=SEQ-01\nimDir=img1\nframeRate=12.5\nseqLength=2\nimWidth=64\nimHeight=48\nimExt=.jpg\n"
    )
    code = (
        "import sys\n"
        f"for m in {list(HEAVY)!r}: sys.modules[m] = None\n"
        "from motops.runtime.video import open_source\n"
        f"src = open_source({str(seq)!r})\n"
        "print(src.fps, src.length, len(list(src)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["12.5", "2", "2"]

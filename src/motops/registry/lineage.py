"""Lineage of a registered engine: the code (git), the data (DVC hashes) and the libraries.

Every key starts with ``motops.`` and every value is a string, so the mapping goes as it is
into MLflow run tags and model version tags:

=================================  ===============================================================
key                                value
=================================  ===============================================================
``motops.git_commit``              ``git rev-parse HEAD``, or ``unknown`` outside a git work tree
``motops.git_dirty``               ``true`` when tracked files differ from the commit, else
                                   ``false`` (``unknown`` outside a git work tree)
``motops.dvc_lock_sha256``         sha256 of ``dvc.lock`` (absent without one)
``motops.dvc.data.<path>``         md5 DVC recorded for each data path the data stages read or
                                   wrote (code paths are covered by the commit)
``motops.lib.<name>``              versions of python, motops, mlflow and the runtime libraries
``motops.pseudo_labelled``         the pseudo-labelled batches trained on, comma-separated (``none``)
``motops.pseudo.<batch>``          which engine labelled it, share of boxes left uncertain, reviews
                                   applied (:func:`pseudo_tags`)
=================================  ===============================================================
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import yaml

from motops.errors import MotopsError

logger = logging.getLogger(__name__)

PREFIX: Final = "motops."
UNKNOWN: Final = "unknown"
#: Stages of ``dvc.yaml`` whose inputs and outputs are data (``foreach`` items ``stage@key`` included).
DATA_STAGES: Final = ("synthesize", "ingest", "validate", "prepare")
#: Paths that are code, not data: their state is the git commit.
_CODE_PREFIXES: Final = ("src/", "stages/", "flows/", "tests/")
_CODE_SUFFIXES: Final = (".py",)
#: MLflow tag keys allow these characters only.
_TAG_UNSAFE = re.compile(r"[^\w./\- ]")
_GIT_TIMEOUT_S: Final = 30


def _git(repo_dir: Path, *args: str) -> str | None:
    """Output of ``git -C repo_dir ARGS`` (stripped), or ``None`` when git or the repository is missing."""
    try:
        result = subprocess.run(
            ["git", "-C", str(repo_dir), *args], capture_output=True, text=True, timeout=_GIT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.warning("git %s in %s failed: %s", " ".join(args), repo_dir, exc)
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def git_state(repo_dir: str | Path) -> dict[str, str]:
    """``motops.git_commit`` and ``motops.git_dirty`` of ``repo_dir`` (``unknown`` when it is not a git work tree).

    Untracked files do not make the tree dirty (DVC outputs and scratch files are untracked);
    a modified or staged tracked file does.
    """
    repo_dir = Path(repo_dir)
    commit = _git(repo_dir, "rev-parse", "--verify", "HEAD")
    if not commit:
        return {f"{PREFIX}git_commit": UNKNOWN, f"{PREFIX}git_dirty": UNKNOWN}
    status = _git(repo_dir, "status", "--porcelain", "--untracked-files=no")
    dirty = UNKNOWN if status is None else str(bool(status)).lower()
    return {f"{PREFIX}git_commit": commit, f"{PREFIX}git_dirty": dirty}


def _is_code(path: str) -> bool:
    return path.startswith(_CODE_PREFIXES) or path.endswith(_CODE_SUFFIXES)


def _entry_hash(entry: Mapping[str, Any]) -> str | None:
    for key in ("md5", "etag", "checksum"):
        value = entry.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def dvc_data_hashes(
    lock: Mapping[str, Any], stages: Iterable[str] = DATA_STAGES, where: str = "dvc.lock"
) -> dict[str, str]:
    """The hash DVC recorded for each data path (``deps`` and ``outs``) of the data stages of a ``dvc.lock``.

    Args:
        lock: The parsed ``dvc.lock`` (schema 2.0: ``stages: {name: {deps: [...], outs: [...]}}``).
        stages: Stage names to read; a ``foreach`` stage's items (``name@key``) count as ``name``.
        where: Named in error messages.

    Returns:
        ``{"motops.dvc.data.<path>": md5}``, sorted by path; code paths (``src/``, ``*.py``, ...)
        are left out.

    Raises:
        MotopsError: ``lock`` does not have the ``stages`` mapping of a ``dvc.lock``.
    """
    entries = lock.get("stages", {}) if isinstance(lock, Mapping) else None
    if not isinstance(entries, Mapping):
        raise MotopsError(f"{where}: expected a mapping with a 'stages' mapping (DVC lock schema 2.0)")
    wanted = set(stages)
    hashes: dict[str, str] = {}
    for name, stage in entries.items():
        if str(name).split("@", 1)[0] not in wanted or not isinstance(stage, Mapping):
            continue
        for section in ("deps", "outs"):
            for entry in stage.get(section) or []:
                if not isinstance(entry, Mapping) or not isinstance(entry.get("path"), str):
                    continue
                path = entry["path"]
                digest = _entry_hash(entry)
                if digest is None or _is_code(path):
                    continue
                hashes[f"{PREFIX}dvc.data.{_TAG_UNSAFE.sub('_', path)}"] = digest
    return dict(sorted(hashes.items()))


def dvc_lock_tags(repo_dir: str | Path, stages: Iterable[str] = DATA_STAGES) -> dict[str, str]:
    """``motops.dvc_lock_sha256`` and the data hashes of ``repo_dir/dvc.lock``; ``{}`` without one.

    Raises:
        MotopsError: ``dvc.lock`` exists but is not YAML of the DVC lock format.
    """
    path = Path(repo_dir) / "dvc.lock"
    if not path.is_file():
        return {}
    data = path.read_bytes()
    tags = {f"{PREFIX}dvc_lock_sha256": hashlib.sha256(data).hexdigest()}
    try:
        lock = yaml.safe_load(data) or {}
    except yaml.YAMLError as exc:
        raise MotopsError(f"{path}: not valid YAML ({exc}); expected a dvc.lock written by DVC") from None
    tags.update(dvc_data_hashes(lock, stages, where=str(path)))
    return tags


def version_tags() -> dict[str, str]:
    """``motops.lib.<name>``: python, motops, mlflow and the runtime libraries (``not installed`` when absent)."""
    from motops.runtime.bundle import library_versions

    versions: dict[str, str | None] = dict(library_versions())
    try:
        versions["mlflow"] = importlib.metadata.version("mlflow")
    except importlib.metadata.PackageNotFoundError:
        versions["mlflow"] = None
    return {f"{PREFIX}lib.{name}": value or "not installed" for name, value in sorted(versions.items())}


def lineage_tags(repo_dir: str | Path, *, data_stages: Iterable[str] = DATA_STAGES) -> dict[str, str]:
    """Everything that says where an engine came from, as MLflow tags (see the module docstring).

    Args:
        repo_dir: The project's root (a git work tree holding ``dvc.lock``).
        data_stages: Stages of ``dvc.lock`` whose data hashes are recorded.

    Returns:
        ``{"motops.<key>": str}``: git commit and dirty flag, the ``dvc.lock`` digest and data
        hashes (when there is a ``dvc.lock``), library versions.

    Raises:
        MotopsError: ``dvc.lock`` exists but cannot be read as a DVC lock file.
    """
    return {**git_state(repo_dir), **dvc_lock_tags(repo_dir, data_stages), **version_tags()}


def pseudo_tags(params: Any, root: str | Path = ".") -> dict[str, str]:
    """Which sources of ``data.sources`` were pseudo-labelled, and by which engine (their ``pseudo.json``).

    Args:
        params: The params (``data.sources`` entries with ``labels: pseudo`` are read).
        root: Project root the source paths are relative to.

    Returns:
        ``{"motops.pseudo_labelled": "a, b" or "none", "motops.pseudo.<batch>": "champion ...; ..."}``.
    """
    names, tags = [], {}
    for source in params.data.sources:
        if isinstance(source, str) or getattr(source, "labels", "gt") != "pseudo":
            continue
        folder = Path(root) / source.path
        name = folder.name
        names.append(name)
        record_file = folder / "pseudo.json"
        if not record_file.is_file():
            tags[f"{PREFIX}pseudo.{name}"] = "pseudo.json missing"
            continue
        record = json.loads(record_file.read_text(encoding="utf-8"))
        stats = record.get("stats", {})
        reviews = record.get("reviews_applied", [])
        tags[f"{PREFIX}pseudo.{name}"] = (
            f"labelled by {record.get('champion') or 'unknown'}; {stats.get('boxes', '?')} boxes, "
            f"{stats.get('uncertain_share', 0):.1%} uncertain; {len(reviews)} review(s) applied"
        )
    tags[f"{PREFIX}pseudo_labelled"] = ", ".join(names) or "none"
    return {_TAG_UNSAFE.sub("_", k): v for k, v in tags.items()}

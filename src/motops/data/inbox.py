"""New footage arriving in an inbox: find it, check it, bring it under DVC and into ``data.sources``.

An inbox is a local folder or an S3 prefix (``s3://bucket/prefix``). Each entry directly in
it is one *batch*:

* a folder holding MOTChallenge sequences (``seqinfo.ini`` / ``gt/gt.txt``) -> format ``mot``;
* a folder with ``annotations/`` and ``sequences/`` -> format ``visdrone``;
* a ``.zip`` (CVAT "MOT 1.1" export) -> format ``cvat``;
* unlabelled footage: a video file -> ``video``, a folder of frames with ``fps.txt`` (or a
  ``seqinfo.ini``) and no ``gt/`` -> ``frames``. :func:`admit_unlabelled` has the champion label
  it (:mod:`motops.pseudo`) and lists it with ``labels: pseudo``;
* ``NAME-review.zip``: a corrected export of batch NAME's review task -> ``review``;
  :func:`admit_review` puts it into that batch's pseudo-labels.

A batch is new when ``data/raw/<batch name>`` does not exist yet. Admitting a batch copies it
to ``data/raw/<name>``, reads it with the same reader ``ingest`` uses (a malformed batch is
refused before anything is versioned), ``dvc add``-s it, and appends ``{format, path}`` to
``data.sources`` in ``params.yaml`` (comments kept). The retrain flow then commits the
``.dvc`` file and ``params.yaml`` and runs the pipeline; ``validate`` applies the full
Great Expectations suite to the new footage with everything else.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from motops.errors import ConfigError, DataFormatError


@dataclass(frozen=True)
class Batch:
    """One unit of new footage.

    Attributes:
        name: Folder (or zip stem) name; becomes ``data/raw/<name>`` (``<name>.zip`` for CVAT).
        format: ``mot``, ``visdrone``, ``cvat``; unlabelled ``video`` or ``frames``; ``review``.
        location: Local path or ``s3://bucket/key-prefix`` of the batch.
    """

    name: str
    format: str
    location: str


#: Batch formats without labels: the champion labels them.
UNLABELLED: tuple[str, ...] = ("video", "frames")


def _format_of(path: Path) -> str | None:
    from motops.data.mot import find_mot_sequences
    from motops.pseudo.footage import unlabelled_kind
    from motops.pseudo.review import batch_of_review

    if path.is_file() and path.suffix.lower() == ".zip":
        return "review" if batch_of_review(path) else "cvat"
    kind = unlabelled_kind(path)
    if kind is not None:
        return kind
    if path.is_dir():
        if (path / "annotations").is_dir() and (path / "sequences").is_dir():
            return "visdrone"
        if find_mot_sequences(path):
            return "mot"
    return None


def _raw_name(batch: Batch) -> str:
    return f"{batch.name}.zip" if batch.format == "cvat" else batch.name


def _is_new(batch: Batch, raw_dir: Path) -> bool:
    if batch.format != "review":
        return not (raw_dir / _raw_name(batch)).exists()
    from motops.pseudo.review import batch_of_review, reviewed

    target = raw_dir / str(batch_of_review(batch.location))
    return not (target.is_dir() and reviewed(target, batch.location))


def _s3_split(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ConfigError(f"orchestration.inbox: {uri!r} has no bucket; expected s3://BUCKET/PREFIX")
    return bucket, prefix.strip("/")


def _s3_client(endpoint_url: str | None):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint_url or os.environ.get("MOTOPS_INBOX_ENDPOINT_URL") or None)


def _download_prefix(client, bucket: str, prefix: str, dst: Path) -> None:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix):].lstrip("/")
            if not rel or rel.endswith("/"):
                continue
            target = dst / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, obj["Key"], str(target))


def find_new_batches(inbox: str, raw_dir: Path, *, endpoint_url: str | None = None) -> list[Batch]:
    """Batches in ``inbox`` that are not in ``raw_dir`` yet, sorted by name.

    Entries of unknown format are skipped (hidden files, a README); a folder that looks like
    nothing known is reported as a :class:`DataFormatError` only when admitted explicitly.

    Raises:
        ConfigError: A local inbox that does not exist.
    """
    found: list[Batch] = []
    if inbox.startswith("s3://"):
        bucket, prefix = _s3_split(inbox)
        client = _s3_client(endpoint_url)
        listing = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/" if prefix else "", Delimiter="/")
        for common in listing.get("CommonPrefixes", []):
            name = common["Prefix"].rstrip("/").rsplit("/", 1)[-1]
            if not (raw_dir / name).exists():
                found.append(Batch(name, "auto", f"s3://{bucket}/{common['Prefix'].rstrip('/')}"))
        for obj in listing.get("Contents", []):
            key = obj["Key"]
            if key.lower().endswith(".zip"):
                stem = Path(key).stem
                if not (raw_dir / f"{stem}.zip").exists():
                    found.append(Batch(stem, "cvat", f"s3://{bucket}/{key}"))
        return sorted(found, key=lambda b: b.name)
    root = Path(inbox)
    if not root.is_dir():
        raise ConfigError(f"orchestration.inbox: {root} is not a folder; expected a local folder or s3://BUCKET/PREFIX")
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        fmt = _format_of(entry)
        if fmt is None:
            continue
        batch = Batch(entry.stem if entry.is_file() else entry.name, fmt, str(entry))
        if _is_new(batch, raw_dir):
            found.append(batch)
    return found


def _check_readable(path: Path, fmt: str) -> int:
    """Read the batch as ingest will; return its sequence count. Raises DataFormatError when malformed."""
    from motops.data.ingest import read_source

    with tempfile.TemporaryDirectory(prefix="motops-inbox-check-") as tmp:
        seqs, _ = read_source(fmt, path, staging=Path(tmp))
    if seqs.height == 0:
        raise DataFormatError(path, f"no sequences found in this {fmt} batch")
    return seqs.height


def admit_batch(batch: Batch, repo_dir: Path, *, raw_dir: str = "data/raw", params_file: str = "params.yaml",
                endpoint_url: str | None = None, dvc: str = "dvc") -> dict:
    """Copy ``batch`` into ``raw_dir``, check it, ``dvc add`` it and list it in ``data.sources``.

    Nothing is left behind when the batch is malformed: the copy is removed and neither
    DVC nor ``params.yaml`` is touched.

    Returns:
        ``{"name", "format", "path" (relative to the repo), "sequences", "dvc_file"}``.

    Raises:
        DataFormatError: The batch cannot be read as its format (file and line named).
    """
    repo_dir = Path(repo_dir)
    raw = repo_dir / raw_dir
    raw.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="motops-inbox-", dir=raw.parent) as tmp:
        staged = Path(tmp) / "batch"
        if batch.location.startswith("s3://"):
            bucket, key = _s3_split(batch.location)
            client = _s3_client(endpoint_url)
            if batch.format == "cvat":
                staged = Path(tmp) / f"{batch.name}.zip"
                client.download_file(bucket, key, str(staged))
            else:
                _download_prefix(client, bucket, key, staged)
        elif Path(batch.location).is_dir():
            shutil.copytree(batch.location, staged)
        else:
            staged = Path(tmp) / Path(batch.location).name
            shutil.copy2(batch.location, staged)
        fmt = batch.format if batch.format != "auto" else _format_of(staged)
        if fmt is None:
            raise DataFormatError(batch.location, "not a MOTChallenge folder, a VisDrone folder or a CVAT zip")
        if fmt in (*UNLABELLED, "review"):
            raise DataFormatError(batch.location, f"{fmt} batches are admitted from a local inbox only "
                                                  "(admit_unlabelled / admit_review); copy it to a local inbox")
        resolved = Batch(batch.name, fmt, batch.location)
        count = _check_readable(staged, fmt)
        target = raw / _raw_name(resolved)
        os.replace(staged, target)
    rel = target.relative_to(repo_dir).as_posix()
    _dvc_add(repo_dir, rel, dvc)
    add_source(repo_dir / params_file, {"format": fmt, "path": rel})
    return {"name": resolved.name, "format": fmt, "path": rel, "sequences": count, "dvc_file": f"{rel}.dvc"}


def add_source(params_path: Path, source: dict) -> bool:
    """Append ``source`` to ``data.sources`` of ``params_path`` unless listed; keeps comments. True when added."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    yaml = YAML()
    yaml.preserve_quotes = True
    doc = yaml.load(params_path.read_text(encoding="utf-8"))
    data = doc.setdefault("data", CommentedMap())
    sources = data.get("sources")
    if sources is None:
        sources = CommentedSeq(["synthetic"])
        data["sources"] = sources
    for item in sources:
        if isinstance(item, dict) and item.get("path") == source["path"]:
            return False
    entry = CommentedMap(source)
    entry.fa.set_flow_style()
    sources.append(entry)
    with open(params_path, "w", encoding="utf-8") as f:
        yaml.dump(doc, f)
    return True


def _dvc_add(repo_dir: Path, rel: str, dvc: str) -> None:
    subprocess.run([dvc, "add", "-q", rel], cwd=repo_dir, check=True, capture_output=True, text=True)


def admit_unlabelled(batch: Batch, repo_dir: Path, label, *, raw_dir: str = "data/raw",
                     params_file: str = "params.yaml", dvc: str = "dvc") -> dict:
    """Have the champion label an unlabelled batch, then version and list it like a labelled one.

    ``data/raw/NAME/`` receives the pseudo-labelled sequence ``NAME/`` (frames, ``gt/gt.txt`` with
    uncertain boxes at flag 0), ``pseudo.json`` (champion, settings, statistics), the review task
    ``review/NAME-review.zip`` and the footage itself under ``footage/``; it is ``dvc add``-ed and
    listed in ``data.sources`` as ``{format: mot, path, labels: pseudo}``. Nothing is left behind
    when the footage is refused.

    Args:
        batch: A ``video`` or ``frames`` batch (local path).
        repo_dir: The project.
        label: ``label(footage, out_dir, name) -> pseudo.json record``
            (:func:`motops.pseudo.labeller.pseudo_label_batch` bound to the champion).

    Returns:
        ``{"name", "format", "path", "sequences", "dvc_file", "pseudo": record}``.

    Raises:
        DataFormatError: undecodable footage, a folder of frames without a frame rate, or footage
            the champion finds nobody in (one line naming the file).
    """
    repo_dir = Path(repo_dir)
    raw = repo_dir / raw_dir
    raw.mkdir(parents=True, exist_ok=True)
    source = Path(batch.location)
    with tempfile.TemporaryDirectory(prefix="motops-inbox-", dir=raw.parent) as tmp:
        staged = Path(tmp) / batch.name
        record = label(source, staged, batch.name)
        keep = staged / "footage"
        keep.mkdir()
        if source.is_dir():
            shutil.copytree(source, keep / source.name, ignore=shutil.ignore_patterns(".*"))
        else:
            shutil.copy2(source, keep / source.name)
        target = raw / batch.name
        os.replace(staged, target)
    rel = target.relative_to(repo_dir).as_posix()
    _dvc_add(repo_dir, rel, dvc)
    add_source(repo_dir / params_file, {"format": "mot", "path": rel, "labels": "pseudo"})
    return {"name": batch.name, "format": batch.format, "path": rel, "sequences": 1, "dvc_file": f"{rel}.dvc",
            "pseudo": record}


def admit_review(batch: Batch, repo_dir: Path, *, raw_dir: str = "data/raw", dvc: str = "dvc") -> dict:
    """Put a corrected review export (``NAME-review.zip``) into batch NAME's pseudo-labels and re-version it.

    Raises:
        DataFormatError: no pseudo-labelled batch NAME, or the zip is unreadable or the review of
            another batch (naming the zip); the batch is left as it was.
    """
    from motops.pseudo.review import apply_review, batch_of_review

    repo_dir = Path(repo_dir)
    name = batch_of_review(batch.location)
    target = repo_dir / raw_dir / str(name)
    if not (target / "review").is_dir():
        raise DataFormatError(batch.location, f"a review for batch {name!r}, but {target} is no pseudo-labelled "
                                              "batch with a review task")
    with tempfile.TemporaryDirectory(prefix="motops-review-") as tmp:
        backup = Path(tmp) / "batch"
        shutil.copytree(target, backup, ignore=shutil.ignore_patterns("img1", "footage"))
        try:
            result = apply_review(target, batch.location)
        except BaseException:
            for rel in ("pseudo.json", f"{name}/gt/gt.txt"):
                if (backup / rel).is_file():
                    shutil.copy2(backup / rel, target / rel)
            raise
    rel = target.relative_to(repo_dir).as_posix()
    _dvc_add(repo_dir, rel, dvc)
    return {"name": str(name), "format": "review", "path": rel, "sequences": 1, "dvc_file": f"{rel}.dvc",
            "review": result}

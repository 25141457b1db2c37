"""Prefect flow ``retrain``: new footage in the inbox -> versioned with DVC -> the whole pipeline -> gate -> register.

1. Look for new batches in ``orchestration.inbox`` (a folder or ``s3://BUCKET/PREFIX``); with
   none, the run ends early and says so (nothing is trained, nothing is registered).
2. Admit each batch (:mod:`motops.data.inbox`): copy it to ``data/raw/NAME``, read it as
   ``ingest`` will (a malformed batch fails the run before anything is versioned),
   ``dvc add`` it, list it in ``data.sources``; commit the ``.dvc`` file and ``params.yaml``.
   Unlabelled footage (a video, a folder of frames with ``fps.txt``) is first labelled by the
   champion (``pseudo_labels.champion_alias``; :mod:`motops.pseudo`) and listed with
   ``labels: pseudo``; the frames it is unsure of go to ``data/raw/NAME/review/NAME-review.zip``,
   a CVAT task. A corrected export of it dropped into the inbox as ``NAME-review.zip`` replaces
   those labels (the same run retrains on it).
3. Run every DVC stage as a Prefect task (the ``pipeline`` flow's task: DVC's Python API,
   retries and timeouts from ``orchestration``): validate -> ... -> gate -> register.
4. Commit ``dvc.lock`` and the metrics, ``dvc push``.

Run it once:   python flows/retrain.py [--repo .]
On a schedule: motops schedule  (serves this flow with ``orchestration.retrain_cron``; see prefect.yaml)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline import pipeline  # noqa: E402  (the flow next to this file)

from motops.config import load_params  # noqa: E402
from motops.data.inbox import (  # noqa: E402
    UNLABELLED,
    Batch,
    admit_batch,
    admit_review,
    admit_unlabelled,
    find_new_batches,
)
from motops.errors import DataFormatError  # noqa: E402


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=repo, check=check, capture_output=True, text=True)


def _dvc() -> str:
    candidate = Path(sys.executable).parent / "dvc"
    return str(candidate) if candidate.exists() else "dvc"


def _commit(repo: Path, paths: list[str], message: str) -> str | None:
    """Stage ``paths`` (those that exist) and commit; the new commit's hash, or None when nothing changed."""
    existing = [p for p in paths if (repo / p).exists()]
    if existing:
        _git(repo, "add", "--", *existing)
    if _git(repo, "diff", "--cached", "--quiet", check=False).returncode == 0:
        return None
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD").stdout.strip()


@task(name="find-new-footage")
def find_new(repo: str, inbox: str, raw_dir: str, endpoint_url: str | None) -> list[Batch]:
    inbox_path = inbox if inbox.startswith("s3://") or Path(inbox).is_absolute() else str(Path(repo) / inbox)
    if not inbox_path.startswith("s3://") and not Path(inbox_path).exists():
        return []
    return find_new_batches(inbox_path, Path(repo) / raw_dir, endpoint_url=endpoint_url)


@task(name="admit-footage")
def admit(repo: str, batch: Batch, raw_dir: str, endpoint_url: str | None) -> dict:
    return admit_batch(batch, Path(repo), raw_dir=raw_dir, endpoint_url=endpoint_url, dvc=_dvc())


@task(name="review-footage")
def review(repo: str, batch: Batch, raw_dir: str) -> dict:
    return admit_review(batch, Path(repo), raw_dir=raw_dir, dvc=_dvc())


@task(name="pseudo-label-footage")
def pseudo_label(repo: str, batches: list[Batch], params_file: str) -> list[dict]:
    """Download the champion once and have it label every unlabelled batch (see :mod:`motops.pseudo`)."""
    import tempfile

    from motops.pseudo.footage import open_footage
    from motops.pseudo.labeller import champion_label
    from motops.registry.mlflow_registry import RegistryError, download_for_labelling

    params = load_params(Path(repo) / params_file)
    cfg = params.pseudo_labels
    for batch in batches:  # undecodable footage or a missing frame rate: refused before the champion is fetched
        open_footage(batch.location).close()
    with tempfile.TemporaryDirectory(prefix="motops-champion-") as tmp:
        try:
            champ = download_for_labelling(params, tmp, alias=cfg.champion_alias, root=repo)
        except RegistryError as exc:
            raise DataFormatError(batches[0].location, f"unlabelled, and no engine to label it ({exc}); promote one "
                                                       "(motops promote) or label it by hand (a CVAT MOT 1.1 zip)"
                                  ) from None
        who = f"{champ['model']} version {champ['version']} ({cfg.champion_alias})"
        label = champion_label(champ["bundle"], champ["detector_pt"], cfg, who)
        return [admit_unlabelled(b, Path(repo), label, raw_dir=params.data.raw_dir, params_file=params_file,
                                 dvc=_dvc()) for b in batches]


@flow(name="retrain", log_prints=True)
def retrain(repo_dir: str = ".", params_file: str = "params.yaml") -> dict:
    """Retrain on new footage when there is some; see the module docstring.

    Returns:
        ``{"new_footage": [admitted batches], "ran": bool, "stages": {stage: ran}, "register": {...},
        "commits": [hashes], "message": str}``.
    """
    logger = get_run_logger()
    repo = Path(repo_dir).resolve()
    params = load_params(repo / params_file)
    cfg = params.orchestration
    batches = find_new(str(repo), cfg.inbox, params.data.raw_dir, cfg.inbox_endpoint_url)
    if not batches:
        message = f"no new footage in {cfg.inbox}; nothing to do"
        logger.info(message)
        return {"new_footage": [], "ran": False, "stages": {}, "register": None, "commits": [], "message": message}

    unlabelled = [b for b in batches if b.format in UNLABELLED]
    admitted = [admit(str(repo), b, params.data.raw_dir, cfg.inbox_endpoint_url) for b in batches
                if b.format not in (*UNLABELLED, "review")]
    if unlabelled:
        admitted += pseudo_label(str(repo), unlabelled, params_file)
    admitted += [review(str(repo), b, params.data.raw_dir) for b in batches if b.format == "review"]
    names = ", ".join(a["name"] for a in admitted)
    logger.info("new footage: %s", names)
    for a in admitted:
        if "pseudo" in a:
            stats, task_ = a["pseudo"]["stats"], a["pseudo"]["review"]
            logger.info("%s: labelled by %s at %.1f frames/s: %d tracks, %d boxes, %.1f%% uncertain%s", a["name"],
                        a["pseudo"]["champion"], stats["frames_per_s"], stats["tracks"], stats["boxes"],
                        100 * stats["uncertain_share"],
                        f"; review {a['path']}/{task_['zip']} in CVAT (MOT 1.1) and drop the corrected export into "
                        f"the inbox as {Path(task_['zip']).name}" if task_ else "")
    commits = []
    if cfg.commit:
        paths = [a["dvc_file"] for a in admitted] + [params_file, f"{params.data.raw_dir}/.gitignore"]
        commits.append(_commit(repo, paths, f"retrain: new footage {names}"))

    stages = pipeline(repo_dir=str(repo), params_file=params_file)
    register_file = repo / "metrics" / "register.json"
    registered = json.loads(register_file.read_text()) if register_file.is_file() else None
    if cfg.commit:
        lock_paths = ["dvc.lock", "metrics", ".gitignore", "data/.gitignore", "models/.gitignore", "reports/.gitignore"]
        commits.append(_commit(repo, lock_paths, f"retrain: pipeline run on {names}"))
    if cfg.push:
        subprocess.run([_dvc(), "push", "-q"], cwd=repo, check=True, capture_output=True, text=True)
    version = (registered or {}).get("version")
    message = (f"retrained on {names}: " + (f"model version {version} registered as challenger"
               if registered and registered.get("created") else
               f"nothing registered ({(registered or {}).get('reason', 'see metrics/gate.json')})"))
    logger.info(message)
    return {"new_footage": admitted, "ran": True, "stages": stages, "register": registered,
            "commits": [c for c in commits if c], "message": message}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=".")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    print(json.dumps(retrain(repo_dir=args.repo, params_file=args.params), indent=2, default=str))

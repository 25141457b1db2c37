"""Unlabelled footage: the champion labels it, people review what it is unsure of, the retrain uses both.

The champion's detector is stood in for by detections simulated from the synthetic footage's own
ground truth (misses, jitter, false positives), so these tests check what the labeller does with
detections, not how good a detector is; they run in seconds.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import polars as pl
import pytest

from motops.config import PseudoLabelParams, SyntheticParams
from motops.data.mot import read_mot_dataset, read_mot_sequence, read_seqinfo
from motops.data.synthetic import synthesize
from motops.errors import DataFormatError
from motops.pseudo.labeller import Labeller, fuse_passes, pseudo_label_batch, pseudo_tracks, stitch_tracks
from motops.pseudo.review import apply_review, reviewed

CFG = PseudoLabelParams()
MOTION = {"track_high_thresh": 0.25, "track_low_thresh": 0.1, "new_track_thresh": 0.35, "match_thresh": 0.8,
          "with_reid": False}


@pytest.fixture(scope="module")
def footage(tmp_path_factory) -> Path:
    """One synthetic sequence (8 people, 10 fps, static camera, 40 frames) in MOTChallenge layout."""
    out = tmp_path_factory.mktemp("synth")
    # seed: one where the untrained tiny detector is sure of someone (issue 17's footage moved it from 5 to 1)
    params = SyntheticParams(sequences=1, frames=40, width=320, height=192, seed=1, fps=(10.0,), camera=("static",),
                             people=(6,), occluders=0, name_prefix="cam")
    return synthesize(out, params, progress=False)[0]


def _frames_folder(seq: Path, dst: Path) -> Path:
    """The sequence's frames as an unlabelled batch: images and fps.txt, no gt."""
    dst.mkdir()
    for image in sorted((seq / "img1").iterdir()):
        (dst / image.name).write_bytes(image.read_bytes())
    (dst / "fps.txt").write_text("10\n")
    return dst


class SimulatedChampion:
    """``frame -> (N, 6)`` detections simulated from the ground truth, frame by frame in order."""

    def __init__(self, gt: pl.DataFrame, length: int, *, seed: int = 0, nobody: bool = False) -> None:
        from motops.evaluation.simulate import simulate_detections

        self.dets = {} if nobody else simulate_detections(gt, seed=seed, num_frames=length, class_id=0,
                                                          fp_rate=0.3, miss_rate=0.05)
        self.frame = 0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        self.frame += 1
        return self.dets.get(self.frame, np.zeros((0, 6), np.float32))


def _labeller(seq: Path, **kwargs) -> Labeller:
    _, gt = read_mot_sequence(seq)
    length = read_seqinfo(seq / "seqinfo.ini").length
    return Labeller(SimulatedChampion(gt, length, **kwargs), "botsort", dict(MOTION), {"detector": "simulated"})


def _score(seq: Path, tracks: pl.DataFrame) -> float:
    from motops.evaluation import score

    info = read_seqinfo(seq / "seqinfo.ini")
    _, gt = read_mot_sequence(seq)
    gt = gt.select("frame", "id", "left", "top", "width", "height", "conf", "class", "visibility")
    return score({info.name: gt}, {info.name: tracks.with_columns(pl.lit(1.0).alias("conf"))},
                 {info.name: info}).combined.idf1


# --------------------------------------------------------------------------- labelling


def test_batch_is_labelled_as_mot_ground_truth_that_matches_the_truth(footage, tmp_path):
    batch = _frames_folder(footage, tmp_path / "week-48")
    record = pseudo_label_batch(batch, tmp_path / "out", name="week-48", labeller=_labeller(footage), cfg=CFG,
                                champion="motops-tracker version 1", progress=False)
    seqs, anns = read_mot_dataset(tmp_path / "out")  # what ingest reads
    assert seqs["sequence"].to_list() == ["week-48"] and seqs["fps"][0] == 10.0 and seqs["length"][0] == 40
    stats = record["stats"]
    assert stats["frames"] == 40 and stats["boxes"] == anns.height and stats["tracks"] >= 4
    assert 0 <= stats["uncertain_share"] < 0.5 and stats["boxes_uncertain"] == int((anns["conf"] == 0).sum())
    assert record["champion"] == "motops-tracker version 1"
    certain = anns.filter(pl.col("conf") > 0).select("frame", "id", "left", "top", "width", "height")
    assert _score(footage, certain) > 0.75  # the ids the retrain learns from are right
    stored = json.loads((tmp_path / "out" / "pseudo.json").read_text())
    assert stored["stats"] == stats


def test_forward_backward_disagreement_is_cut_and_agreement_joined():
    # forward: one track over frames 1-4; backward: the same boxes of 1-2 but 3-4 in another track
    fwd = {(1, 0): 1, (2, 0): 1, (3, 0): 1, (4, 0): 1}
    bwd = {(1, 0): 7, (2, 0): 7, (3, 0): 8, (4, 0): 8, (5, 0): 8}
    tracks, conflicts = fuse_passes(fwd, bwd)
    assert conflicts == [((2, 0), (3, 0))]
    assert tracks == [[(1, 0), (2, 0)], [(3, 0), (4, 0), (5, 0)]]  # frame 5: only the backward pass saw it


def _det_rows(boxes_per_frame):
    return [np.array(b, np.float32).reshape(-1, 6) for b in boxes_per_frame]


def test_consistency_filter_marks_short_weak_and_jumping_tracks():
    cfg = PseudoLabelParams(min_track_frames=3, min_mean_score=0.5, max_jump=1.0, max_gap=2, conflict_margin=0)
    good = [[10 + 2 * f, 10, 30 + 2 * f, 60, 0.9, 0] for f in range(8)]
    dets = _det_rows([[g, [200, 10, 220, 60, 0.2, 0]] for g in good])  # a weak second track on every frame
    del_frame = 4  # the good track is missed on frame 5: interpolated
    fwd = {(f + 1, 0): 1 for f in range(8) if f != del_frame} | {(f + 1, 1): 2 for f in range(8)}
    gt, counts = pseudo_tracks(dets, fwd, dict(fwd), cfg)
    first = gt.filter(pl.col("left") < 100)
    assert first["frame"].to_list() == list(range(1, 9)) and (first["conf"] == 1).all()
    assert counts["interpolated"] == 1
    assert (gt.filter(pl.col("left") > 100)["conf"] == 0).all()  # mean score 0.2: uncertain, kept for review
    # a box jumping 5 box heights in one frame: the track is cut, the boxes beside the cut uncertain
    jump = _det_rows([[[10, 10, 30, 60, 0.9, 0]]] * 4 + [[[260, 120, 280, 170, 0.9, 0]]] * 4)
    chain = {(f, 0): 1 for f in range(1, 9)}
    gt, counts = pseudo_tracks(jump, chain, dict(chain), cfg)
    assert counts["jumps"] == 1 and gt["id"].n_unique() == 2
    assert gt.filter(pl.col("frame").is_in([4, 5]))["conf"].to_list() == [0.0, 0.0]
    assert gt.filter(pl.col("frame").is_in([1, 8]))["conf"].to_list() == [1.0, 1.0]


def test_uncertain_boxes_are_ignored_by_training_and_pseudo_sequences_never_validate(footage, tmp_path):
    from motops.data.ingest import ingest
    from motops.data.prepare import build_yolo_dataset, split_sequences

    batch = _frames_folder(footage, tmp_path / "new")
    pseudo_label_batch(batch, tmp_path / "pseudo", name="new", labeller=_labeller(footage), cfg=CFG, progress=False)
    seqs, anns = ingest([{"format": "mot", "path": str(footage.parent)},
                         {"format": "mot", "path": str(tmp_path / "pseudo"), "labels": "pseudo"}],
                        synthetic_dir=tmp_path / "none", out_dir=tmp_path / "seqs",
                        annotations_path=tmp_path / "a.parquet", sequences_path=tmp_path / "s.parquet")
    assert dict(zip(seqs["sequence"], seqs["source"], strict=True)) == {"cam-01": "mot", "new": "pseudo"}
    for seed in range(5):
        assert split_sequences(seqs["sequence"].to_list(), seed=seed, val_fraction=0.5, train_only=["new"]) == (
            ["new"], ["cam-01"])
    with pytest.raises(Exception, match="pseudo-labelled"):
        split_sequences(seqs["sequence"].to_list(), val_sequences=["new"], train_only=["new"])
    build_yolo_dataset(seqs, anns, train=["new"], val=["cam-01"], out_dir=tmp_path / "yolo", clip_length=40,
                       clip_stride=40, min_visibility=0.0, progress=False)
    split = json.loads((tmp_path / "yolo" / "split.json").read_text())
    uncertain = anns.filter((pl.col("sequence") == "new") & (pl.col("conf") == 0))
    assert split["train"]["masked"] == uncertain.height > 0
    assert split["train"]["boxes"] == anns.filter((pl.col("sequence") == "new") & (pl.col("conf") > 0)).height



def _walker(frames, x0, speed, det_index=0, height=50.0):
    """A person walking right at ``speed`` px/frame: ``{frame: box row}`` and the track's nodes."""
    rows = {f: [x0 + speed * f, 100, x0 + speed * f + 20, 100 + height, 0.9, 0] for f in frames}
    return rows, [(f, det_index) for f in frames]


def _scene(length, *people):
    dets = [[] for _ in range(length)]
    for rows in people:
        for f, row in rows.items():
            dets[f - 1].append(row)
    return _det_rows([d if d else np.zeros((0, 6)) for d in dets])


def test_stitching_joins_one_person_lost_for_longer_than_the_tracker_buffer_and_nothing_else():
    cfg = PseudoLabelParams(stitch_max_gap_s=2.0, stitch_max_distance=1.0, stitch_min_similarity=0.6)
    # one person walking at 3 px/frame, lost for frames 21-35 (1.5 s at 10 fps); another far below
    before, nodes_a = _walker(range(1, 21), 10, 3.0)
    after, nodes_b = _walker(range(36, 61), 10, 3.0)
    other = {f: [400, 300, 420, 350, 0.9, 0] for f in range(36, 61)}
    dets = _scene(60, before, after)
    dets = [np.vstack([d, np.array([other[f + 1]], np.float32)]) if f + 1 in other else d for f, d in enumerate(dets)]
    nodes_c = [(f, 1) for f in range(36, 61)]
    chains = [nodes_a, nodes_b, nodes_c]
    joined, joins = stitch_tracks(chains, dets, 10.0, cfg)
    assert joins == 1 and sorted(joined) == sorted([nodes_a + nodes_b, nodes_c])
    # the same through pseudo_tracks: one id for the walker, frames 1-60 minus the unfilled gap
    fwd = {n: 1 for n in nodes_a} | {n: 2 for n in nodes_b} | {n: 3 for n in nodes_c}
    gt, counts = pseudo_tracks(dets, fwd, dict(fwd), cfg, fps=10.0)
    assert counts["stitched"] == 1 and gt["id"].n_unique() == 2
    # appearance that disagrees keeps them apart; so does a gap beyond the limit, and stitching off
    look = [np.tile(np.array([1.0, 0.0], np.float32), (len(d), 1)) for d in dets]
    for f, _ in nodes_b:
        look[f - 1][0] = [0.0, 1.0]
    assert stitch_tracks(chains, dets, 10.0, cfg, look)[1] == 0
    assert stitch_tracks(chains, dets, 10.0, cfg.model_copy(update={"stitch_max_gap_s": 1.0}))[1] == 0
    assert stitch_tracks(chains, dets, 10.0, cfg.model_copy(update={"stitch_max_gap_s": 0.0}))[1] == 0
    # someone else starting 2.4 box heights from where the walker's motion leads: not joined
    ahead, nodes_r = _walker(range(36, 61), 10 + 120, 3.0)
    assert stitch_tracks([nodes_a, nodes_r], _scene(60, before, ahead), 10.0, cfg)[1] == 0


# --------------------------------------------------------------------------- bad input


def test_bad_footage_is_refused_in_one_line_naming_the_file(footage, tmp_path):
    labeller = _labeller(footage)
    broken = tmp_path / "week-49.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video" * 20)
    no_rate = _frames_folder(footage, tmp_path / "week-50")
    (no_rate / "fps.txt").unlink()
    for bad, said in ((broken, "cannot be decoded"), (no_rate, "without a frame rate")):
        with pytest.raises(DataFormatError) as info:
            pseudo_label_batch(bad, tmp_path / "out", name="x", labeller=labeller, cfg=CFG, progress=False)
        assert str(bad) in str(info.value) and said in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out" / "pseudo.json").exists()


def test_batch_the_champion_finds_nobody_in_is_refused_and_nothing_is_admitted(footage, tmp_path):
    from motops.data.inbox import admit_unlabelled, find_new_batches

    repo = tmp_path / "repo"
    (repo / "data" / "inbox").mkdir(parents=True)
    (repo / "params.yaml").write_text("data:\n  sources: [synthetic]\n")
    _frames_folder(footage, repo / "data" / "inbox" / "empty-street")
    batch, = find_new_batches(str(repo / "data" / "inbox"), repo / "data" / "raw")
    assert batch.format == "frames"

    def label(src, out, name):
        return pseudo_label_batch(src, out, name=name, labeller=_labeller(footage, nobody=True), cfg=CFG,
                                  progress=False)

    with pytest.raises(DataFormatError, match="finds nobody") as info:
        admit_unlabelled(batch, repo, label, dvc="false")
    assert "empty-street" in str(info.value) and "\n" not in str(info.value)
    assert not (repo / "data" / "raw" / "empty-street").exists()
    assert (repo / "params.yaml").read_text() == "data:\n  sources: [synthetic]\n"


# --------------------------------------------------------------------------- review


def _reviewed_copy(task: Path, dst: Path, *, fix_all: bool) -> Path:
    """What a reviewer's CVAT export looks like: the same images, the ignored boxes corrected (flag 1)."""
    with zipfile.ZipFile(task) as src, zipfile.ZipFile(dst, "w") as out:
        for item in src.namelist():
            data = src.read(item)
            if item == "gt/gt.txt" and fix_all:
                rows = [line.split(",") for line in data.decode().splitlines()]
                data = "".join(",".join([*r[:6], "1", *r[7:]]) + "\n" for r in rows).encode()
            out.writestr(item, data)
    return dst


def test_review_task_round_trip_replaces_the_uncertain_labels(footage, tmp_path):
    from motops.data.cvat import read_cvat_mot_zip

    batch = _frames_folder(footage, tmp_path / "wk")
    out = tmp_path / "raw" / "wk"
    record = pseudo_label_batch(batch, out, name="wk", labeller=_labeller(footage), cfg=CFG, progress=False)
    assert record["review"]["boxes_uncertain"] == record["stats"]["boxes_uncertain"] > 0
    task = out / record["review"]["zip"]
    seqs, anns = read_cvat_mot_zip(task, out_dir=tmp_path / "cvat")  # the existing CVAT reader opens it
    assert seqs["length"][0] == record["stats"]["frames_to_review"] == record["review"]["frames"]
    assert int((anns["conf"] == 0).sum()) == record["stats"]["boxes_uncertain"]

    corrected = _reviewed_copy(task, tmp_path / "wk-review.zip", fix_all=True)
    result = apply_review(out, corrected)
    _, after = read_mot_sequence(out / "wk")
    assert result["uncertain_after"] == 0 and (after["conf"] == 1).all()
    assert after.height == record["stats"]["boxes"]
    assert reviewed(out, corrected)
    assert json.loads((out / "pseudo.json").read_text())["reviews_applied"][0]["sha256"] == result["sha256"]


def test_corrected_zip_of_another_batch_is_refused_and_changes_nothing(footage, tmp_path):
    batch = _frames_folder(footage, tmp_path / "wk")
    out = tmp_path / "raw" / "wk"
    record = pseudo_label_batch(batch, out, name="wk", labeller=_labeller(footage), cfg=CFG, progress=False)
    other = _reviewed_copy(out / record["review"]["zip"], tmp_path / "wk-review.zip", fix_all=True)
    with zipfile.ZipFile(other) as zf:  # same frame count, another camera's images
        members = {n: zf.read(n) for n in zf.namelist()}
    with zipfile.ZipFile(other, "w") as zf:
        for name, data in members.items():
            if name.startswith("img1/"):
                image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                data = cv2.imencode(".jpg", 255 - image)[1].tobytes()
            zf.writestr(name, data)
    before = (out / "wk" / "gt" / "gt.txt").read_text()
    with pytest.raises(DataFormatError, match="another batch") as info:
        apply_review(out, other)
    assert str(other) in str(info.value) and "\n" not in str(info.value)
    assert (out / "wk" / "gt" / "gt.txt").read_text() == before and not reviewed(out, other)


def test_inbox_tells_unlabelled_footage_and_reviews_from_labelled_batches(footage, tmp_path):
    from motops.data.inbox import find_new_batches

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    _frames_folder(footage, inbox / "frames-batch")
    (inbox / "cam7.mp4").write_bytes(b"")
    (inbox / "frames-batch-review.zip").write_bytes(b"")
    (inbox / "labelled.zip").write_bytes(b"")
    found = {b.name: b.format for b in find_new_batches(str(inbox), tmp_path / "raw")}
    assert found == {"frames-batch": "frames", "cam7": "video", "frames-batch-review": "review", "labelled": "cvat"}


def test_lineage_names_the_pseudo_labelled_batches_and_their_champion(tmp_path):
    from motops.config import load_params
    from motops.registry.lineage import pseudo_tags

    (tmp_path / "data/raw/wk").mkdir(parents=True)
    (tmp_path / "data/raw/wk/pseudo.json").write_text(json.dumps(
        {"champion": "motops-tracker version 3 (champion)", "stats": {"boxes": 10, "uncertain_share": 0.2},
         "reviews_applied": []}))
    params_file = tmp_path / "params.yaml"
    params_file.write_text("data:\n  sources: [synthetic, {format: mot, path: data/raw/wk, labels: pseudo}]\n")
    tags = pseudo_tags(load_params(params_file), tmp_path)
    assert tags["motops.pseudo_labelled"] == "wk"
    assert tags["motops.pseudo.wk"].startswith("labelled by motops-tracker version 3")


# --------------------------------------------------------------------------- the champion, from the registry


def _retrain_flow():
    import importlib.util

    spec = importlib.util.spec_from_file_location("motops_flows_retrain", Path(__file__).resolve().parents[1]
                                                  / "flows" / "retrain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_retrain_labels_with_the_registered_champion_or_refuses(footage, project, tmp_path, monkeypatch):
    import yaml
    from helpers import write_tiny_bundle

    from motops.config import GatesParams, RegistryParams
    from motops.data.inbox import find_new_batches
    from motops.registry.gates import evaluate_gate
    from motops.registry.mlflow_registry import download_for_labelling, promote, register

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (project / "data" / "inbox").mkdir(parents=True)
    _frames_folder(footage, project / "data" / "inbox" / "cam9")
    batches = find_new_batches(str(project / "data" / "inbox"), project / "data" / "raw")
    flow = _retrain_flow()
    with pytest.raises(DataFormatError, match="no engine to label it") as info:  # no champion yet
        flow.pseudo_label.fn(str(project), batches, "params.yaml")
    assert "cam9" in str(info.value) and "\n" not in str(info.value)
    assert not (project / "data" / "raw" / "cam9").exists()

    bundle = write_tiny_bundle(tmp_path / "bundle", "1", models_dir=tmp_path / "tiny")
    metrics = {"idf1": 0.7, "hota": 0.6, "mota": 0.6, "fps": 20.0, "backend": "onnxruntime"}
    gates, registry = GatesParams(), RegistryParams()
    register(bundle, gate=evaluate_gate(metrics, gates, backend="onnxruntime"), metrics=metrics, params_flat={},
             plots=[], lineage={}, params=registry, root=project, checkpoints=[tmp_path / "tiny" / "det.pt"])
    promote(registry, gates, backend="onnxruntime", root=project)
    champion = download_for_labelling(registry, tmp_path / "dl", root=project)
    assert champion["version"] == "1" and (champion["bundle"] / "manifest.json").is_file()
    assert champion["detector_pt"].read_bytes() == (tmp_path / "tiny" / "det.pt").read_bytes()

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["pseudo_labels"]["imgsz"] = 640  # a larger input: the champion's detector.pt, not its 160x160 ONNX
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    admitted, = flow.pseudo_label.fn(str(project), batches, "params.yaml")
    record = json.loads((project / "data/raw/cam9/pseudo.json").read_text())
    assert record["champion"] == "motops-tracker version 1 (champion)" == admitted["pseudo"]["champion"]
    assert record["stats"]["imgsz"] == [384, 640]  # the champion's .pt at pseudo_labels.imgsz, not the bundle's 160
    assert (project / "data/raw/cam9.dvc").is_file() and (project / "data/raw/cam9/footage/cam9/fps.txt").is_file()
    sources = yaml.safe_load((project / "params.yaml").read_text())["data"]["sources"]
    assert {"format": "mot", "path": "data/raw/cam9", "labels": "pseudo"} in sources
    assert find_new_batches(str(project / "data" / "inbox"), project / "data" / "raw") == []

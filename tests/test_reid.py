"""The appearance branch: losses, PK sampler, ReIDNet, checkpoints, crop set, training."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import cv2
import numpy as np
import polars as pl
import pytest
import torch

from motops.config import ReidParams, SyntheticParams
from motops.data.crops import build_reid_crops, read_reid_index, retrieval_metrics
from motops.data.mot import read_mot_dataset
from motops.data.synthetic import synthesize
from motops.errors import DataFormatError
from motops.models.reid import ReIDNet, count_parameters, load_reid, reid_meta, save_reid
from motops.training.losses import IDLoss, TripletLoss
from motops.training.reid import evaluate_reid, train_reid
from motops.training.samplers import PKSampler

CROP_H, CROP_W = 64, 32
CROP_ARGS = dict(
    height=CROP_H, width=CROP_W, clip_min=5, clip_max=15, heldout_fraction=0.3, min_visibility=0.3, seed=0
)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Three tiny synthetic sequences (320 x 192, 60 frames, ~10 people each)."""
    root = tmp_path_factory.mktemp("footage")
    synthesize(
        root,
        SyntheticParams(sequences=3, frames=60, width=320, height=192, people=(10,), fps=(10.0,)),
        progress=False,
    )
    return read_mot_dataset(root)


@pytest.fixture(scope="module")
def crops(footage: tuple[pl.DataFrame, pl.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> Path:
    sequences, annotations = footage
    out = tmp_path_factory.mktemp("crops")
    build_reid_crops(sequences, annotations, out, progress=False, **CROP_ARGS)
    return out


# --------------------------------------------------------------------------- losses


def test_triplet_loss_zero_when_margin_is_met_and_positive_otherwise() -> None:
    # two ids on a 1 x 2 rectangle: every positive at distance 1, the nearest negative at 2
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [1.0, 2.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert TripletLoss(margin=0.9)(emb, labels).item() == 0.0
    # margin larger than the gap (2 - 1): every anchor contributes 1 - 2 + 1.5
    assert TripletLoss(margin=1.5)(emb, labels).item() == pytest.approx(0.5)
    # a negative closer than a positive: positive even with a tiny margin
    mixed = torch.tensor([[0.0, 0.0], [3.0, 0.0], [1.0, 0.0], [4.0, 0.0]])
    assert TripletLoss(margin=0.01)(mixed, labels).item() > 0.0


def test_triplet_loss_uses_the_hardest_positive_and_negative() -> None:
    emb = torch.tensor([[0.0], [1.0], [4.0], [10.0], [12.0], [5.0]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    d = torch.cdist(emb, emb)
    same = labels[:, None] == labels[None, :]
    expected = []
    for i in range(6):
        pos = d[i][same[i] & (torch.arange(6) != i)].max()
        neg = d[i][~same[i]].min()
        expected.append(max(0.0, float(pos - neg + 0.3)))
    got = TripletLoss(margin=0.3)(emb, labels).item()
    assert got == pytest.approx(sum(expected) / 6, rel=1e-5)
    assert got > 0


def test_triplet_loss_gradient_is_finite_for_duplicates() -> None:
    emb = torch.zeros(4, 3, requires_grad=True)
    TripletLoss(0.3)(emb, torch.tensor([0, 0, 1, 1])).backward()
    assert torch.isfinite(emb.grad).all()


def test_id_loss_matches_the_label_smoothing_formula() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    labels = torch.tensor([0, 1])
    eps = 0.2
    loss = IDLoss(eps)(logits, labels)
    assert loss.shape == ()
    logp = torch.log_softmax(logits, dim=1).numpy()
    n_classes = logits.shape[1]
    per = [
        -(1 - eps) * logp[i, labels[i]] - eps / n_classes * logp[i].sum() for i in range(len(labels))
    ]
    assert loss.item() == pytest.approx(float(np.mean(per)), rel=1e-6)
    plain = -np.mean([logp[i, labels[i]] for i in range(2)])
    assert IDLoss(0.0)(logits, labels).item() == pytest.approx(float(plain), rel=1e-6)
    assert loss.item() != pytest.approx(float(plain))
    with pytest.raises(ValueError, match="label_smoothing"):
        IDLoss(1.0)


# --------------------------------------------------------------------------- sampler


def test_pk_sampler_yields_p_ids_times_k() -> None:
    labels = [0] * 10 + [1] * 6 + [2] * 1 + [3] * 4 + [4] * 9
    sampler = PKSampler(labels, p=3, k=4, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == len(labels) // 12
    seen = set()
    for _ in range(20):
        batch = sampler.sample()
        assert len(batch) == 12
        ids = [labels[i] for i in batch]
        groups = [ids[j : j + 4] for j in range(0, 12, 4)]
        assert all(len(set(g)) == 1 for g in groups)  # K consecutive items of one id
        assert len({g[0] for g in groups}) == 3  # P distinct ids
        seen.update(ids)
    assert 2 in seen  # the id with one item is sampled with replacement
    assert PKSampler(labels, 3, 4, seed=5).sample() == PKSampler(labels, 3, 4, seed=5).sample()


def test_pk_sampler_refuses_fewer_than_p_ids() -> None:
    with pytest.raises(ValueError, match=r"at least p=4 .* only 3"):
        PKSampler([0, 0, 1, 1, 2, 2], p=4, k=2)
    with pytest.raises(ValueError, match="p >= 1"):
        PKSampler([0, 1], p=0, k=2)


# --------------------------------------------------------------------------- network


def test_reidnet_size_shapes_and_unit_norm() -> None:
    torch.manual_seed(0)
    model = ReIDNet(embedding_dim=256, num_classes=40)
    n = count_parameters(model)
    print(f"ReIDNet parameters: {n} (with a 40-id classifier: {count_parameters(model, include_classifier=True)})")
    assert 1_000_000 <= n <= 3_000_000
    assert 1_000_000 <= count_parameters(model, include_classifier=True) <= 3_000_000
    x = torch.rand(4, 3, 128, 64) * 255
    model.train()
    emb, logits = model(x)
    assert emb.shape == (4, 256) and logits.shape == (4, 40)
    model.eval()
    with torch.no_grad():
        out = model(x)
        small = model(torch.rand(2, 3, 64, 32) * 255)
    assert out.shape == (4, 256) and small.shape == (2, 256)
    assert torch.allclose(out.norm(dim=1), torch.ones(4), atol=1e-5)
    assert not torch.allclose(out[0], out[1])
    no_head = ReIDNet(embedding_dim=128).train()
    emb, logits = no_head(x)
    assert emb.shape == (4, 128) and logits is None


def test_save_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = ReIDNet(embedding_dim=64, num_classes=7).train()
    with torch.no_grad():
        for _ in range(3):  # move the BatchNorm running statistics off their defaults
            model(torch.rand(8, 3, 64, 32) * 255)
    model.eval()
    x = torch.rand(5, 3, 64, 32) * 255
    with torch.no_grad():
        before = model(x)
    path = save_reid(tmp_path / "m" / "reid.pt", model, reid_meta(model, height=64, width=32, extra={"note": "x"}))
    raw = torch.load(path, weights_only=True)  # plain types and tensors only
    assert raw["meta"]["input_size"] == [64, 32]
    loaded, meta = load_reid(path)
    assert not loaded.training
    with torch.no_grad():
        after = loaded(x)
    assert torch.equal(before, after)
    assert meta["embedding_dim"] == 64 and meta["num_classes"] == 7 and meta["note"] == "x"
    assert meta["channel_order"] == "BGR" and len(meta["mean"]) == 3 and len(meta["std"]) == 3
    with pytest.raises(FileNotFoundError):
        load_reid(tmp_path / "missing.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a ReID checkpoint"):
        load_reid(tmp_path / "other.pt")


# --------------------------------------------------------------------------- crop set


def test_crop_set_splits_and_sizes(crops: Path, footage: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    _, annotations = footage
    index = pl.read_parquet(crops / "index.parquet")
    assert set(index.columns) >= {"path", "pid", "sequence", "id", "frame", "split"}
    assert set(index["split"].unique()) == {"train", "query", "gallery"}
    train = set(index.filter(pl.col("split") == "train")["pid"])
    heldout = set(index.filter(pl.col("split") != "train")["pid"])
    assert train and len(heldout) >= 2
    assert not train & heldout
    assert set(index.filter(pl.col("split") == "query")["pid"]) == set(
        index.filter(pl.col("split") == "gallery")["pid"]
    )
    # one pid per (sequence, id), and the reverse
    pairs = index.select("pid", "sequence", "id").unique()
    assert pairs["pid"].n_unique() == pairs.height == pairs.select("sequence", "id").n_unique()
    for pid in heldout:
        rows = index.filter(pl.col("pid") == pid)
        q, g = rows.filter(pl.col("split") == "query"), rows.filter(pl.col("split") == "gallery")
        assert not set(q["frame"]) & set(g["frame"]), f"pid {pid}: query and gallery share frames"
        if rows["clip"].n_unique() >= 2:
            assert not set(q["clip"]) & set(g["clip"]), f"pid {pid}: query and gallery share a clip"
    # clips are runs of clip_min..clip_max consecutive frames
    for (_, _), clip in index.group_by(["pid", "clip"]):
        frames = sorted(clip["frame"])
        assert CROP_ARGS["clip_min"] <= len(frames) <= CROP_ARGS["clip_max"]
        assert frames == list(range(frames[0], frames[0] + len(frames)))
    # only boxes visible enough
    joined = index.join(annotations, on=["sequence", "id", "frame"], how="left")
    assert joined["visibility"].null_count() == 0
    assert (joined["visibility"] >= CROP_ARGS["min_visibility"]).all()
    for rel in index["path"].to_list()[:: max(1, index.height // 25)]:
        image = cv2.imread(str(crops / rel))
        assert image is not None and image.shape == (CROP_H, CROP_W, 3)
    absolute = read_reid_index(crops)
    assert Path(absolute["path"][0]).is_file()


def test_crop_set_is_reproducible(footage: tuple[pl.DataFrame, pl.DataFrame], crops: Path, tmp_path: Path) -> None:
    sequences, annotations = footage
    again = build_reid_crops(sequences, annotations, tmp_path, progress=False, **CROP_ARGS)
    assert again.equals(pl.read_parquet(crops / "index.parquet"))


def test_crop_set_refuses_empty_or_too_few_ids(footage: tuple[pl.DataFrame, pl.DataFrame], tmp_path: Path) -> None:
    sequences, annotations = footage
    with pytest.raises(DataFormatError, match="no ReID crops"):
        build_reid_crops(sequences, annotations, tmp_path, progress=False, **{**CROP_ARGS, "clip_min": 61,
                                                                                "clip_max": 70})
    three = annotations.filter((pl.col("sequence") == "synth-01") & pl.col("id").is_in([1, 3, 4]))
    with pytest.raises(DataFormatError, match="only 3 identities.*at least 4"):
        build_reid_crops(sequences, three, tmp_path, progress=False, **CROP_ARGS)
    with pytest.raises(ValueError, match="clip_min"):
        build_reid_crops(sequences, annotations, tmp_path, progress=False, **{**CROP_ARGS, "clip_min": 9,
                                                                                "clip_max": 5})


# --------------------------------------------------------------------------- evaluation and training


def test_retrieval_metrics_by_hand() -> None:
    g = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]]), dim=1)
    g_pids = np.array([0, 1, 0, 1])
    g_keys = np.array([10, 11, 12, 13])
    q = torch.nn.functional.normalize(torch.tensor([[1.0, 0.05], [0.0, 1.0]]), dim=1)
    perfect = retrieval_metrics(q, g, np.array([0, 1]), g_pids, np.array([1, 2]), g_keys)
    assert perfect == {"rank1": 1.0, "map": 1.0, "queries": 2}
    # query 0 now looks like id 1: its matches come at ranks 3 and 4 -> AP = (1/3 + 2/4) / 2
    swapped = retrieval_metrics(q, g, np.array([1, 0]), g_pids, np.array([1, 2]), g_keys)
    assert swapped["rank1"] == 0.0
    assert swapped["map"] == pytest.approx((1 / 3 + 2 / 4) / 2)
    # gallery items of the query's own frame are left out of its ranking
    same_frame = retrieval_metrics(q[:1], g, np.array([1]), g_pids, np.array([10]), g_keys)
    assert same_frame["map"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_train_reid_refuses_too_few_ids_or_missing_index(crops: Path, tmp_path: Path) -> None:
    kwargs = dict(out_dir=tmp_path, metrics_path=tmp_path / "m.json", plot_path=tmp_path / "p.png", progress=False)
    index = pl.read_parquet(crops / "index.parquet")
    one_id = tmp_path / "one-id"
    one_id.mkdir()
    first = index.filter(pl.col("split") == "train")["pid"][0]
    index.filter((pl.col("split") != "train") | (pl.col("pid") == first)).write_parquet(one_id / "index.parquet")
    with pytest.raises(DataFormatError, match=r"holds 1 training identities; the triplet loss needs at least 2"):
        train_reid(one_id, ReidParams(weights=None), **kwargs)
    with pytest.raises(DataFormatError, match="index not found"):
        train_reid(tmp_path / "nothing", ReidParams(weights=None), **kwargs)


def test_train_reid_with_fewer_ids_than_a_batch_asks_for_uses_them_all(crops: Path, tmp_path: Path) -> None:
    """A user's footage with few people still trains: P becomes the number of training identities."""
    params = ReidParams(height=CROP_H, width=CROP_W, p_ids=200, k_instances=2, embedding_dim=32, seed=0, weights=None)
    metrics = train_reid(crops, params, out_dir=tmp_path, metrics_path=tmp_path / "m.json",
                         plot_path=tmp_path / "p.png", progress=False, max_steps=2)
    assert metrics["p_ids"] == metrics["train_ids"] < 200
    assert (tmp_path / "reid.pt").is_file()


@pytest.mark.slow
def test_trained_reid_beats_untrained_on_heldout_ids(crops: Path, tmp_path: Path) -> None:
    params = ReidParams(height=CROP_H, width=CROP_W, epochs=100, p_ids=8, k_instances=4, lr=3e-3, seed=0,
                        weights=None)
    start = time.perf_counter()
    metrics = train_reid(
        crops,
        params,
        out_dir=tmp_path / "model",
        metrics_path=tmp_path / "metrics.json",
        plot_path=tmp_path / "curves.png",
        device="cpu",
        max_steps=100,
        progress=False,
    )
    seconds = time.perf_counter() - start
    print(
        f"\nReID held-out ({metrics['heldout_ids']} ids, {metrics['query_crops']} queries) after "
        f"{metrics['steps']} steps in {seconds:.0f} s: rank-1 {metrics['untrained_rank1']:.3f} -> "
        f"{metrics['rank1']:.3f}, mAP {metrics['untrained_map']:.3f} -> {metrics['map']:.3f}"
    )
    assert metrics["steps"] == 100
    assert metrics["map"] >= metrics["untrained_map"] + 0.1
    assert metrics["rank1"] >= metrics["untrained_rank1"]
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == metrics
    assert {"rank1", "map", "untrained_rank1", "untrained_map", "steps", "train_ids", "heldout_ids"} <= set(on_disk)
    assert on_disk["base"] is None and on_disk["kept_start"] is False and on_disk["input_size"] == [CROP_H, CROP_W]
    numbers = {k: v for k, v in on_disk.items() if k not in ("base", "base_train_ids", "kept_start", "input_size")}
    assert all(isinstance(v, int | float) and math.isfinite(v) for v in numbers.values())
    assert (tmp_path / "curves.png").stat().st_size > 0
    # the checkpoint reproduces the reported score
    model, meta = load_reid(tmp_path / "model" / "reid.pt")
    assert meta["input_size"] == [CROP_H, CROP_W]
    index = pl.read_parquet(crops / "index.parquet")
    again = evaluate_reid(
        model, index.filter(pl.col("split") == "query"), index.filter(pl.col("split") == "gallery"), root=crops
    )
    assert again["map"] == pytest.approx(metrics["map"], abs=1e-4)


def _embeddings(path: Path, crops: Path) -> torch.Tensor:
    model, meta = load_reid(path)
    index = pl.read_parquet(crops / "index.parquet").filter(pl.col("split") == "query").head(16)
    images = [cv2.resize(cv2.imread(str(crops / p)), tuple(meta["input_size"][::-1])) for p in index["path"]]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        return model(x)


def test_finetuning_starts_from_the_base_checkpoint_with_its_size_and_a_new_classifier(
    crops: Path, tmp_path: Path
) -> None:
    """reid.weights: the base's layers, input size and width are used; params' architecture is not."""
    from tests.helpers import save_tiny_base_reid

    base = save_tiny_base_reid(tmp_path / "base.pt")  # 64 x 32, 32-d, channels 4/8/8/16, 5 ids
    params = ReidParams(weights=str(base), height=128, width=64, embedding_dim=256, keep_better_start=False,
                        p_ids=4, k_instances=2)
    metrics = train_reid(crops, params, out_dir=tmp_path / "ft", metrics_path=tmp_path / "m.json",
                         plot_path=tmp_path / "p.png", progress=False, max_steps=3)
    model, meta = load_reid(tmp_path / "ft" / "reid.pt")
    assert meta["input_size"] == [64, 32] and metrics["input_size"] == [64, 32]
    assert (meta["embedding_dim"], meta["stem_channels"], meta["stage_channels"]) == (32, 4, [8, 8, 16])
    assert meta["num_classes"] == metrics["train_ids"] != 5  # the footage's identities, not the base's
    assert metrics["base"] == str(base) and meta["base"] == str(base)
    base_model, _ = load_reid(base)
    # the starting point is the base: the score before the first step is the base's own
    index = pl.read_parquet(crops / "index.parquet")
    start = evaluate_reid(base_model, index.filter(pl.col("split") == "query"),
                          index.filter(pl.col("split") == "gallery"), root=crops)
    assert metrics["untrained_map"] == pytest.approx(start["map"], abs=1e-6)


def test_missing_base_checkpoint_is_refused_naming_the_key(crops: Path, tmp_path: Path) -> None:
    from motops.errors import ConfigError

    with pytest.raises(ConfigError, match=r"reid.weights: .*nope.pt: ReID checkpoint not found"):
        train_reid(crops, ReidParams(weights=str(tmp_path / "nope.pt")), out_dir=tmp_path,
                   metrics_path=tmp_path / "m.json", plot_path=tmp_path / "p.png", progress=False, max_steps=1)
    assert not (tmp_path / "reid.pt").exists()


def test_reid_architecture_params_are_checked() -> None:
    with pytest.raises(ValueError, match=r"len\(channels\) == len\(blocks\) \+ 1"):
        ReidParams(channels=(16, 32, 64), blocks=(1, 1, 2))
    net = ReIDNet(**{"embedding_dim": 128, "stem_channels": 16, "stage_channels": (32, 64, 128)})
    assert count_parameters(net) < 700_000  # the compact default: a quarter of the 128 x 64 net


@pytest.mark.slow
def test_keep_better_start_keeps_a_good_base_that_training_ruins(crops: Path, tmp_path: Path) -> None:
    """A finetune that scores a lower held-out mAP than its start ships the start (reid.keep_better_start)."""
    good = ReidParams(height=CROP_H, width=CROP_W, p_ids=8, k_instances=4, lr=3e-3, seed=0, weights=None,
                      embedding_dim=64, channels=(16, 32, 64, 64))
    train_reid(crops, good, out_dir=tmp_path / "base", metrics_path=tmp_path / "b.json",
               plot_path=tmp_path / "b.png", progress=False, max_steps=60)
    ruin = ReidParams(weights=str(tmp_path / "base" / "reid.pt"), lr=1.0, p_ids=8, k_instances=4)
    metrics = train_reid(crops, ruin, out_dir=tmp_path / "ft", metrics_path=tmp_path / "m.json",
                         plot_path=tmp_path / "p.png", progress=False, max_steps=4)
    assert metrics["trained_map"] < metrics["untrained_map"]
    assert metrics["kept_start"] is True and metrics["map"] == metrics["untrained_map"]
    assert torch.allclose(_embeddings(tmp_path / "ft" / "reid.pt", crops),
                          _embeddings(tmp_path / "base" / "reid.pt", crops), atol=1e-6)

"""Network definitions shared by training, export and the tracking runtime."""

from motops.models.reid import BGR_MEAN, BGR_STD, ReIDNet, count_parameters, load_reid, reid_meta, save_reid

__all__ = ["BGR_MEAN", "BGR_STD", "ReIDNet", "count_parameters", "load_reid", "reid_meta", "save_reid"]

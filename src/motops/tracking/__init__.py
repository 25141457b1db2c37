"""The Ultralytics peer tracker (:mod:`motops.tracking.ultralytics`), outside the runtime.

The trackers a device runs live in :mod:`motops.runtime`; this package holds only the wrapper
around Ultralytics' own trackers that benchmarks and tests compare them with. It needs torch
and Ultralytics (the ``train`` extra).
"""

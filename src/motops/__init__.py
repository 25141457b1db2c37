"""motops: a workflow-orchestrated MLOps pipeline for video multi-object tracking."""

__version__ = "0.1.0"

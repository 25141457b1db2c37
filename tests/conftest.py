"""Shared fixtures."""

from __future__ import annotations

import os

# No telemetry, no downloads, from any library the tests import.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

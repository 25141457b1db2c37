"""Footage and annotations: readers and writers (polars), synthetic footage, ingest."""

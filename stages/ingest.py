"""DVC stage `ingest`: see :func:`motops.stages.ingest`."""

import sys

from motops.stages import main

if __name__ == "__main__":
    sys.exit(main("ingest"))

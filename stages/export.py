"""DVC stage `export`: see :func:`motops.stages.export`."""

import sys

from motops.stages import main

if __name__ == "__main__":
    sys.exit(main("export"))

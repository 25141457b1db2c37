"""DVC stage `evaluate`: see :func:`motops.stages.evaluate`."""

import sys

from motops.stages import main

if __name__ == "__main__":
    sys.exit(main("evaluate"))

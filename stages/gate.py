"""DVC stage `gate`: see :func:`motops.stages.gate`."""

import sys

from motops.stages import main

if __name__ == "__main__":
    sys.exit(main("gate"))

"""DVC stage `prepare`: see :func:`motops.stages.prepare`."""

import sys

from motops.stages import main

if __name__ == "__main__":
    sys.exit(main("prepare"))

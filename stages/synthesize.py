"""DVC stage `synthesize`: see :func:`motops.stages.synthesize`."""

import sys

from motops.stages import main

if __name__ == "__main__":
    sys.exit(main("synthesize"))

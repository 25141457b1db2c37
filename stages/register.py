"""DVC stage `register`: see :func:`motops.stages.register`."""

import sys

from motops.stages import main

if __name__ == "__main__":
    sys.exit(main("register"))

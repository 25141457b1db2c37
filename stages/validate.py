"""DVC stage `validate`: see :func:`motops.stages.validate`."""

import sys

from motops.stages import main

if __name__ == "__main__":
    sys.exit(main("validate"))

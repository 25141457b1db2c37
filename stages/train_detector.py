"""DVC stage `train_detector`: see :func:`motops.stages.train_detector`."""

import sys

from motops.stages import main

if __name__ == "__main__":
    sys.exit(main("train_detector"))

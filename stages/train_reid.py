"""DVC stage `train_reid`: see :func:`motops.stages.train_reid`."""

import sys

from motops.stages import main

if __name__ == "__main__":
    sys.exit(main("train_reid"))

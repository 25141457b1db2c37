"""DVC stage `pretrain_reid`: see :func:`motops.stages.pretrain_reid`."""

import sys

from motops.stages import main

if __name__ == "__main__":
    sys.exit(main("pretrain_reid"))

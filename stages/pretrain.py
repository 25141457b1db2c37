"""DVC stage `pretrain`: see :func:`motops.stages.pretrain`."""

import sys

from motops.stages import main

if __name__ == "__main__":
    sys.exit(main("pretrain"))

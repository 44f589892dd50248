"""``python -m vggt_mv COMMAND ...``: the ``vggt-mv`` command line, also under torchrun
(``torchrun --standalone --nproc_per_node N -m vggt_mv reconstruct|train ...``)."""
import sys

from vggt_mv.cli import main

if __name__ == "__main__":
    sys.exit(main())

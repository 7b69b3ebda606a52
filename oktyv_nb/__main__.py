"""``python -m oktyv_nb``: the ``oktyv-nb`` command line (see :mod:`oktyv_nb.cli`)."""

import sys

from oktyv_nb.cli import main

if __name__ == "__main__":
    sys.exit(main())

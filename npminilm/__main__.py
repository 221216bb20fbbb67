"""`python -m npminilm`: the same as the `npminilm` console script."""

import sys

from .cli import main

sys.exit(main())

"""`python -m benchmark ...` is the same as `bench ...`."""

import sys

from .cli import main

sys.exit(main())

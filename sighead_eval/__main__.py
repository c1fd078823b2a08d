"""`python -m sighead_eval ...` is `sighead-eval ...`."""

import sys

from .cli import main

sys.exit(main())

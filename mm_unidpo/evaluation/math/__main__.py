"""``python -m mm_unidpo.evaluation.math ...``: the same as ``mm-unidpo eval math ...`` (and fails the same way:
one message, exit 1; 2 for a usage error)."""

from __future__ import annotations

import sys

from mm_unidpo.cli import main

sys.exit(main(["eval", "math", *sys.argv[1:]]))

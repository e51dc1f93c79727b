"""``python -m mm_unidpo.evaluation.math ...``: the same as ``mm-unidpo eval math ...``."""

from __future__ import annotations

import logging
import sys

from .harness import main

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
sys.exit(main())

"""The repository root on ``sys.path``, so ``examples.invoices.workflow`` imports."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

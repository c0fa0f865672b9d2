"""Make the repository root importable, so ``import bench.run`` works under plain ``pytest`` too
(bench/ is not an installed package)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

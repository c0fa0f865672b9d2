"""Progress bars for long work (tqdm on stderr); quiet when not on a terminal unless forced."""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm


def progress(*, total: int | None = None, desc: str = "", disable: bool = False, **kw: Any) -> tqdm:
    """A tqdm bar on stderr. ``VQREC_PROGRESS=0`` turns every bar off, ``=1`` forces them on."""
    env = os.environ.get("VQREC_PROGRESS")
    if env == "0":
        disable = True
    elif env != "1" and not disable:
        disable = not sys.stderr.isatty()
    return tqdm(total=total, desc=desc, disable=disable, file=sys.stderr, mininterval=0.5, **kw)

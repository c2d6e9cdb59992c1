"""Where wsbench keeps caches (synthetic data, prepared patches, checkpoints).

``WSBENCH_CACHE`` overrides the default ``~/.cache/wsbench``.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    root = Path(os.environ.get("WSBENCH_CACHE") or Path.home() / ".cache" / "wsbench").expanduser()
    p = root.joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True)
    return p

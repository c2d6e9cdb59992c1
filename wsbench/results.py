"""The results file: one versioned JSON document per run, plus the per-case journal.

Schema version 1 (see ``wsbench.validate`` for the checks, CONTRIBUTING.md for the field list):
``schema_version, wsbench_version, git_hash, created, command, device, seed, benchmark, dataset,
plugins, binarization, cases, aggregate, timings, failures, complete``.

While a run is in progress each finished case is appended to ``cases.jsonl`` (flushed and
fsynced), so ``kill -9`` loses at most the case in progress; ``results.json`` is written
atomically (temp file + rename) at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterable

SCHEMA_VERSION = 1


def git_hash() -> str | None:
    """The wsbench checkout's commit (``+dirty`` when modified), or None outside a git tree."""
    here = Path(__file__).resolve().parent.parent
    if not (here / ".git").exists():
        return None
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        if not rev:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def write_json_atomic(path: Path, data: Any) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=False, allow_nan=False, default=_json_default)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_default(o: Any):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.bool_,)):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class CaseJournal:
    """Append-only per-case records (``cases.jsonl``) that survive ``kill -9``.

    On open, a truncated last line (a write interrupted by a kill) is dropped and duplicate
    case ids are removed, so a resumed run never duplicates a case.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            good = []
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the case in progress when the run was killed
                if isinstance(rec, dict) and "case_id" in rec and rec["case_id"] not in self.records:
                    self.records[rec["case_id"]] = rec
                    good.append(line)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(g + "\n" for g in good))
            os.replace(tmp, self.path)

    def __contains__(self, case_id: str) -> bool:
        return case_id in self.records

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, allow_nan=False, default=_json_default)
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records[record["case_id"]] = record

    def ordered(self, case_ids: Iterable[str]) -> list[dict[str, Any]]:
        return [self.records[c] for c in case_ids if c in self.records]


def load_results(path: Path) -> dict[str, Any]:
    """Read a results JSON (no validation; see :func:`wsbench.validate.load_results`)."""
    from wsbench.errors import WsbenchError

    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise WsbenchError(f"results file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise WsbenchError(f"{path} is not valid JSON ({e}); is it a wsbench results file?") from None

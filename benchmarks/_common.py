"""Helpers shared by the benchmark scripts: tables, JSON output, machine facts.

Where results go: ``benchmarks/results/`` holds the committed results that the
README and docs quote, so a run only writes there when asked (``--save``). By
default a run writes ``runs/benchmarks/<name>.json`` (git-ignored); ``--out PATH``
writes anywhere. :func:`add_output_options` adds both flags, :func:`output_path`
resolves them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any

from world_model.atomic import atomic_path

#: The committed results, written only with ``--save``.
RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: Where a run writes by default (``runs/`` is git-ignored).
RUNS_DIR = Path(__file__).resolve().parent.parent / "runs" / "benchmarks"


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--out PATH`` and ``--save`` (one or the other) to a benchmark's parser."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--out", default=None, help="JSON path (default: runs/benchmarks/<name>.json, outside the committed results)"
    )
    group.add_argument(
        "--save", action="store_true", help="write benchmarks/results/<name>.json, replacing the committed result"
    )


def output_path(name: str, out: str | Path | None = None, save: bool = False) -> Path:
    """Where the JSON of benchmark ``name`` goes: ``out``; with ``save``, the committed results; else ``RUNS_DIR``."""
    if out and save:
        raise ValueError(f"Pass either out= or save=True, not both (got out={out!r})")
    if out:
        return Path(out)
    return (RESULTS_DIR if save else RUNS_DIR) / f"{name}.json"


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Render rows as a fixed-width text table."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
        return str(value)

    widths = {c: max(len(c), *(len(cell(r.get(c, ""))) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns), "  ".join("-" * widths[c] for c in columns)]
    lines += ["  ".join(cell(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def write_json(name: str, payload: dict[str, Any], out: str | Path | None = None, save: bool = False) -> Path:
    """Atomically write ``payload`` (plus machine info) as JSON to :func:`output_path`; return the path."""
    path = output_path(name, out, save)
    payload = {"benchmark": name, "machine": machine_info(), **payload}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2))
    return path

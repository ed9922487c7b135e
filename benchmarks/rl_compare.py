"""Compare saved RL runs from several folders over a common step budget.

``benchmarks.rl_sample_efficiency`` keeps one file per (variant, seed) in a run
folder (``<out>_runs/``). Runs of different budgets live in different folders (the
recurrent baseline ran to 50k steps, the others to 100k); this script reads them
all and scores every run on its first ``--until`` steps only, from the per-episode
records each file keeps: steps to the threshold (the same rolling rate as the
benchmark, counted only if reached within ``--until``) and the mean success over
``--bins`` equal bins up to ``--until``.

Usage::

    python -m benchmarks.rl_compare --until 50000 --seeds 5 \\
        benchmarks/results/rl_sample_efficiency_runs:gqn \\
        benchmarks/results/rl_sample_efficiency_runs:pixels \\
        benchmarks/results/rl_sample_efficiency_pixels_lstm_50k_runs:pixels_lstm

Each argument is ``FOLDER:VARIANT`` (optionally ``FOLDER:VARIANT=LABEL``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from agents.rl import steps_to_rolling_threshold, success_curve
from benchmarks._common import format_table, write_json


def score(run: dict, budget: int, until: int, threshold: float, window: int, bins: int) -> dict:
    """A saved run of ``budget`` steps scored on its first ``until`` steps."""
    if until > budget:
        raise ValueError(f"a {run['variant']} run (seed {run['seed']}) has {budget} steps, fewer than {until}")
    steps = np.asarray(run["episode_end_steps"])
    successes = np.asarray(run["episode_successes"], dtype=float)
    keep = steps <= until
    reached = steps_to_rolling_threshold(list(steps[keep]), list(successes[keep]), threshold, window)
    curve = success_curve(list(steps[keep]), list(successes[keep]), until, bins)
    return {"seed": run["seed"], "steps_to_threshold": reached, "auc": float(np.nanmean(curve))}


def _thousands(steps: float) -> str:
    return f"{steps / 1000:.1f}k" if np.isfinite(steps) else "-"


def load(spec: str, seeds: list[int]) -> tuple[str, list[tuple[dict, int]]]:
    """``FOLDER:VARIANT[=LABEL]`` -> (label, (run, its step budget) for each saved seed)."""
    folder, _, rest = spec.rpartition(":")
    if not folder:
        raise ValueError(f"expected FOLDER:VARIANT[=LABEL], got {spec!r}")
    variant, _, label = rest.partition("=")
    runs = []
    for seed in seeds:
        path = Path(folder) / f"{variant}_{seed}.json"
        if path.exists():
            saved = json.loads(path.read_text())
            runs.append((saved["run"], saved["settings"]["steps"]))
    if not runs:
        raise FileNotFoundError(f"no {variant} runs of seeds {seeds} in {folder}")
    return label or variant, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("specs", nargs="+", help="FOLDER:VARIANT[=LABEL]")
    parser.add_argument("--until", type=int, default=50_000, help="score each run on its first UNTIL steps")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--bins", type=int, default=10)
    parser.add_argument("--out", default=None, help="JSON path (default: runs/benchmarks/rl_compare.json)")
    args = parser.parse_args()

    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    rows = []
    for spec in args.specs:
        label, runs = load(spec, seeds)
        scored = [score(run, budget, args.until, args.threshold, args.window, args.bins) for run, budget in runs]
        per_seed = ", ".join(f"{s['seed']}: {_thousands(s['steps_to_threshold'])}" for s in scored)
        rows.append(
            {
                "variant": label,
                "seeds": len(scored),
                "steps_to_threshold": float(np.median([s["steps_to_threshold"] for s in scored])),
                "auc": float(np.mean([s["auc"] for s in scored])),
                "per_seed": per_seed,
                "runs": scored,
            }
        )
    print(f"first {args.until} steps, threshold {args.threshold} ('-': not within them)")
    print(format_table(rows, ["variant", "seeds", "steps_to_threshold", "auc", "per_seed"]))
    path = write_json("rl_compare", {"args": vars(args), "rows": rows}, out=args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

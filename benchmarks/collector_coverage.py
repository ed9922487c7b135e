"""Floor coverage of the explorer against the random walker, on the same scenes.

Usage::

    python -m benchmarks.collector_coverage [--scenes 20] [--steps 200] [--env-id GQNMazeScene-S3-v0]

Each policy walks ``--steps`` steps from ``reset(seed=s)`` for the same seeds;
coverage (fraction of the floor seen, see ``agents/coverage.py``) is averaged.

Prints a table and writes ``runs/benchmarks/collector_coverage.json`` (``--save``: the committed
``benchmarks/results/collector_coverage.json``; ``--out PATH``: anywhere).
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

import gqn_env  # noqa: F401
from agents.collectors import make_policy, walk
from agents.coverage import coverage
from benchmarks._common import add_output_options, format_table, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="GQNMazeScene-S3-v0")
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200)
    add_output_options(parser)
    args = parser.parse_args()

    env = gym.make(args.env_id, image_size=16)
    results = {}
    for name in ("random", "explorer"):
        values = []
        for seed in range(args.scenes):
            ep = walk(env, 10_000 + seed, args.steps, make_policy(name, np.random.default_rng(seed)))
            values.append(coverage(env.unwrapped, ep.poses))
        results[name] = values
    env.close()
    base = float(np.mean(results["random"]))
    rows = [
        {
            "policy": name,
            "coverage_mean": float(np.mean(v)),
            "coverage_std": float(np.std(v)),
            "vs_random": float(np.mean(v)) / base,
        }
        for name, v in results.items()
    ]
    print(format_table(rows, ["policy", "coverage_mean", "coverage_std", "vs_random"]))
    print(f"{args.scenes} scenes of {args.env_id}, {args.steps} steps each")
    payload = {"args": vars(args), "rows": rows, "per_scene": results}
    print(f"wrote {write_json('collector_coverage', payload, args.out, args.save)}")


if __name__ == "__main__":
    main()

"""Cost of the GQN representation: a GQNMaze step next to a raw scene step, in one run.

Usage::

    python -m benchmarks.gqn_maze_speed [--steps 1000] [--rounds 3] [--threads 1]

Both envs are the same 3x3 maze at the world model's image size; the GQNMaze
step also encodes the new frame and adds it to the running representation. Uses
the bundled world model when present (else a fresh ``cpu``-preset model, which
costs the same). Rounds are interleaved and the median is reported.

Prints a table and writes ``runs/benchmarks/gqn_maze_speed.json`` (``--save``: the committed
``benchmarks/results/gqn_maze_speed.json``; ``--out PATH``: anywhere).
"""

from __future__ import annotations

import argparse
import statistics

import gymnasium as gym
import numpy as np
import torch

import gqn_env  # noqa: F401
from benchmarks._common import add_output_options, format_table, write_json
from benchmarks.env_speed import steps_per_second
from gqn_env.envs.gqn_maze import BUNDLED_CHECKPOINT, load_world_model
from world_model import GQN, GQNConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    add_output_options(parser)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    bundled = BUNDLED_CHECKPOINT.exists()
    model = load_world_model() if bundled else GQN(GQNConfig.cpu()).eval()
    size = model.config.image_size
    envs = {
        "GQNMazeScene-S3-v0 (raw)": gym.make("GQNMazeScene-S3-v0", image_size=size),
        "GQNMaze-S3-v0 (default observation)": gym.make("GQNMaze-S3-v0", model=model),
    }
    rng = np.random.default_rng(0)
    for env in envs.values():
        steps_per_second(env, 100, rng)
    samples: dict[str, list[float]] = {name: [] for name in envs}
    for _ in range(args.rounds):
        for name, env in envs.items():
            samples[name].append(steps_per_second(env, args.steps, rng))
    raw = statistics.median(samples["GQNMazeScene-S3-v0 (raw)"])
    rows = []
    for name in envs:
        sps = statistics.median(samples[name])
        row = {"env": name, "image": f"{size}x{size}", "steps_per_s": sps, "ms_per_step": 1000 / sps}
        rows.append({**row, "cost_vs_raw": raw / sps})
    print(format_table(rows, ["env", "image", "steps_per_s", "ms_per_step", "cost_vs_raw"]))
    source = f"bundled {BUNDLED_CHECKPOINT.name}" if bundled else "fresh cpu preset"
    print(f"model: {source}, torch threads {torch.get_num_threads()}")
    payload = {"args": vars(args), "bundled_model": bundled, "rows": rows, "samples": samples}
    path = write_json("gqn_maze_speed", payload, args.out, args.save)
    print(f"wrote {path}")
    for env in envs.values():
        env.close()


if __name__ == "__main__":
    main()

"""Steps per second of the GQN maze scene env next to MiniWorld's own maze, in one run.

Usage::

    python -m benchmarks.env_speed [--steps 2000] [--rounds 3] [--save]

Each (env, image size) pair runs ``--steps`` random actions per round; rounds are
interleaved so that machine noise hits all envs alike, and the median round is
reported. The ratio column is ours / MiniWorld-MazeS3-v0 at the same size.

Prints a table and writes ``runs/benchmarks/env_speed.json`` (``--save``: the committed
``benchmarks/results/env_speed.json``; ``--out PATH``: anywhere).
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np

import gqn_env  # noqa: F401  (registers ids, headless set-up)
from benchmarks._common import add_output_options, format_table, write_json


def steps_per_second(env: gym.Env, steps: int, rng: np.random.Generator) -> float:
    env.reset(seed=int(rng.integers(1 << 30)))
    actions = rng.integers(0, 3, size=steps)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(int(action))
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    add_output_options(parser)
    args = parser.parse_args()

    import miniworld  # noqa: F401  (registers MiniWorld-*)

    envs = {}
    for size in args.sizes:
        envs[("GQNMazeScene-S3-v0", size)] = gym.make("GQNMazeScene-S3-v0", image_size=size)
        envs[("MiniWorld-MazeS3-v0", size)] = gym.make("MiniWorld-MazeS3-v0", obs_width=size, obs_height=size)
    rng = np.random.default_rng(0)
    samples: dict[tuple[str, int], list[float]] = {key: [] for key in envs}
    for env in envs.values():  # warm-up (texture loads, JIT of llvmpipe shaders)
        steps_per_second(env, 200, rng)
    for _ in range(args.rounds):
        for key, env in envs.items():
            samples[key].append(steps_per_second(env, args.steps, rng))

    rows = []
    for size in args.sizes:
        base = statistics.median(samples[("MiniWorld-MazeS3-v0", size)])
        for name in ("GQNMazeScene-S3-v0", "MiniWorld-MazeS3-v0"):
            sps = statistics.median(samples[(name, size)])
            rows.append({"env": name, "image": f"{size}x{size}", "steps_per_s": sps, "ratio_vs_miniworld": sps / base})
    print(format_table(rows, ["env", "image", "steps_per_s", "ratio_vs_miniworld"]))
    path = write_json(
        "env_speed",
        {"args": vars(args), "rows": rows, "samples": {f"{k[0]}@{k[1]}": v for k, v in samples.items()}},
        args.out,
        args.save,
    )
    print(f"wrote {path}")
    for env in envs.values():
        env.close()


if __name__ == "__main__":
    main()

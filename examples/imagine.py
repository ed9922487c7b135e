"""Watch what the GQN world model imagines while an agent walks through a maze.

Rolls out an exploring agent in a GQNMaze env (the bundled world model unless
``--checkpoint`` is given) and writes ``imagination.mp4``, ``imagination.gif`` and
``unvisited.png`` (see :func:`gqn_env.wrappers.imagination.rollout_imagination`).

Usage::

    python examples/imagine.py [--steps 150] [--seed 0] [--checkpoint CKPT] [--out outputs/imagine]
    gqn-gym imagine ...   (the same, with more options; ``gqn-gym demo`` with the defaults)
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

import gqn_env  # noqa: F401  (registers GQNMaze-v0)
from agents.collectors import make_policy
from gqn_env.wrappers.imagination import rollout_imagination


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default=None, help="a world-model checkpoint; default: the bundled model")
    parser.add_argument("--out", default="outputs/imagine")
    args = parser.parse_args()

    kwargs = {"checkpoint": args.checkpoint} if args.checkpoint else {}
    env = gym.make("GQNMaze-S3-v0", render_mode="rgb_array", map_size=192, **kwargs)
    explorer = make_policy("explorer", np.random.default_rng(args.seed))
    files = rollout_imagination(env, explorer, steps=args.steps, seed=args.seed, out=args.out)
    env.close()
    print(f"{files.frames} frames: {files.video}, {files.gif}; unvisited poses: {files.panel}")


if __name__ == "__main__":
    main()

"""Render a GQN maze scene: a few egocentric frames and the top-down map, as PNG files.

Usage::

    python examples/scene_tour.py [--seed 0] [--out outputs/scene_tour]
    gqn-gym tour ...   (the same, with more options)
"""

from __future__ import annotations

import argparse

import gymnasium as gym

import gqn_env  # noqa: F401  (registers the ids)
from gqn_env.wrappers.imagination import scene_tour


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/scene_tour")
    args = parser.parse_args()

    env = gym.make("GQNMazeScene-S3-v0", image_size=64, map_size=256)
    tour = scene_tour(env, seed=args.seed, frames=8, out=args.out)
    env.close()
    print(f"start pose {tour['pose'].round(3).tolist()}; wrote {tour['views']} and {tour['map']}")


if __name__ == "__main__":
    main()

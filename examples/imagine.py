"""Watch what the GQN world model imagines while an agent walks through a maze.

Rolls out an exploring agent in ``GQNMaze-v0`` (the bundled world model unless
``--checkpoint`` is given) and writes:

* ``imagination.mp4`` and ``imagination.gif``: each frame shows the true view, the
  view the model imagines for the same pose from the frames seen so far, and the map;
* ``unvisited.png``: true and imagined views from poses the agent never stood near.

Usage::

    python examples/imagine.py [--steps 150] [--seed 0] [--out outputs/imagine]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import imageio.v3 as iio
import numpy as np

import gqn_env  # noqa: F401  (registers GQNMaze-v0)
from agents.collectors import make_policy
from gqn_env.wrappers.imagination import grid, write_video
from world_model.atomic import atomic_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="GQNMaze-S3-v0")
    parser.add_argument("--checkpoint", default=None, help="a world-model checkpoint (default: the bundled one)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--policy", choices=["random", "explorer"], default="explorer")
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--unvisited", type=int, default=6, help="imagined views from unvisited poses")
    parser.add_argument("--out", type=Path, default=Path("outputs/imagine"))
    args = parser.parse_args()

    kwargs = {"checkpoint": args.checkpoint} if args.checkpoint else {}
    env = gym.make(args.env_id, render_mode="rgb_array", map_size=192, **kwargs)
    scene = env.unwrapped
    policy = make_policy(args.policy, np.random.default_rng(args.seed))
    _, info = env.reset(seed=args.seed)
    policy.reset()
    frames = [env.render()]
    visited = [info["pose"][:2]]
    for _ in range(args.steps):
        _, _, terminated, truncated, info = env.step(policy.act(info))
        frames.append(env.render())
        visited.append(info["pose"][:2])
        if terminated or truncated:
            break

    args.out.mkdir(parents=True, exist_ok=True)
    mp4 = write_video(frames, args.out / "imagination.mp4", fps=args.fps)
    gif = write_video(frames[::2], args.out / "imagination.gif", fps=args.fps // 2 or 1)

    # Poses at least 2 m from every pose the agent stood at: views it never had.
    rng = np.random.default_rng(args.seed + 1)
    visited_xy = np.stack(visited)
    imagine = env.get_wrapper_attr("imagine")
    truths, dreams = [], []
    for _ in range(5000):
        if len(truths) == args.unvisited:
            break
        pose = scene.sample_free_pose(rng)
        if np.min(np.linalg.norm(visited_xy - [pose.x, pose.z], axis=1)) >= 2.0:
            truths.append(scene.render_view(pose))
            dreams.append(imagine(pose))
    panel_path = args.out / "unvisited.png"
    if truths:
        with atomic_path(panel_path) as tmp:
            iio.imwrite(tmp, grid([truths, dreams], ["true views from unvisited poses", "imagined"]))
    env.close()
    print(f"{len(frames)} frames: {mp4}")
    print(f"GIF: {gif}")
    print(f"unvisited poses ({len(truths)}): {panel_path}")


if __name__ == "__main__":
    main()

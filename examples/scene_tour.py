"""Render a GQN maze scene: a few egocentric frames and the top-down map, as PNG files.

Usage::

    python examples/scene_tour.py [--seed 0] [--out outputs/scene_tour]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import imageio.v3 as iio
import numpy as np

import gqn_env  # noqa: F401  (registers the ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="GQNMazeScene-S3-v0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("outputs/scene_tour"))
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    env = gym.make(args.env_id, image_size=args.image_size, map_size=256)
    scene = env.unwrapped
    obs, info = env.reset(seed=args.seed)
    rng = np.random.default_rng(args.seed)
    frames = [obs["image"]]
    for _ in range(args.frames - 1):
        frames.append(scene.render_view(scene.sample_free_pose(rng)))
    strip = np.concatenate(frames, axis=1)  # (H, frames * W, 3)
    iio.imwrite(args.out / "views.png", strip)
    iio.imwrite(args.out / "map.png", scene.render_map())
    env.close()
    print(f"start pose [x, z, yaw, pitch] = {np.round(info['pose'], 3).tolist()}")
    print(f"wrote {args.out / 'views.png'} ({len(frames)} views) and {args.out / 'map.png'}")


if __name__ == "__main__":
    main()

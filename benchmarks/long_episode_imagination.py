"""Imagination after a long episode: the raw sum of all frames vs the sum scaled to ``context_max``.

Usage::

    python -m benchmarks.long_episode_imagination [--checkpoint PATH] [--scenes 30] [--steps 200]

The GQN is trained on sums of at most ``context_max`` views; an agent's episode
holds hundreds. On held-out scenes (the evaluation protocol of
``benchmarks/world_model.py``: a random walk, queries at free poses in the rooms
it visited) this compares the PSNR of the prior-mean prediction from

* ``all frames, raw sum``: r summed over every frame of the walk;
* ``all frames, scaled``: that sum times ``context_max / frames`` (what
  :class:`gqn_env.wrappers.RepresentationState` renders from);
* ``16 spread frames``: the standard evaluation's context.

Prints a table and writes ``runs/benchmarks/long_episode_imagination.json`` (``--save``:
the committed ``benchmarks/results/long_episode_imagination.json``; ``--out PATH``: anywhere).
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch

import gqn_env  # noqa: F401
from agents.world_model_training import make_eval_scenes
from benchmarks._common import add_output_options, format_table, write_json
from gqn_env.envs.gqn_maze import load_world_model
from world_model.evaluation import per_image_mse, per_image_psnr
from world_model.model import scale_to_context


def psnr(pred: torch.Tensor, truth: np.ndarray) -> np.ndarray:
    """Per-image PSNR of ``(Q, 3, S, S)`` predictions against ``(Q, S, S, 3)`` uint8 truth."""
    return per_image_psnr(per_image_mse(pred.movedim(1, -1).numpy(), truth / 255.0))


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="default: the bundled model")
    parser.add_argument("--scenes", type=int, default=30)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--env-id", default="GQNMazeScene-S3-v0")
    add_output_options(parser)
    args = parser.parse_args()

    model = load_world_model(args.checkpoint)
    k = model.config.context_max
    env = gym.make(args.env_id, image_size=model.config.image_size)
    scenes = make_eval_scenes(env, args.scenes, num_context=args.steps + 1, steps=args.steps)
    env.close()
    scores: dict[str, list[np.ndarray]] = {"all frames, raw sum": [], "all frames, scaled": [], "16 spread frames": []}
    for scene in scenes:
        per_view = model.encode(scene.context_images, scene.context_viewpoints)  # (T, C, h, w)
        n = len(per_view)
        spread = np.linspace(0, n - 1, 16).round().astype(int)
        rs = {
            "all frames, raw sum": per_view.sum(0),
            "all frames, scaled": scale_to_context(per_view.sum(0), n, k),
            "16 spread frames": per_view[spread].sum(0),
        }
        q = len(scene.query_viewpoints)
        for name, r in rs.items():
            frames = spread if name == "16 spread frames" else slice(None)  # the frames r was built from
            context = scene.context_images[frames][None], scene.context_viewpoints[frames][None]
            count = len(spread) if name == "16 spread frames" else n  # the views r stands for
            pred = model.render(
                r[None].expand(q, *r.shape), scene.query_viewpoints, context=context, sample=False, frames=count
            )
            scores[name].append(psnr(pred, scene.query_images))
    rows = [{"context": name, "psnr_db": float(np.concatenate(v).mean())} for name, v in scores.items()]
    print(format_table(rows, ["context", "psnr_db"]))
    print(f"{args.scenes} held-out scenes, {args.steps}-step walks, context_max {k}")
    payload = {"args": vars(args), "context_max": k, "rows": rows}
    path = write_json("long_episode_imagination", payload, args.out, args.save)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

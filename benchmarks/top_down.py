"""Top-down imagination: the maze seen from above, predicted from first-person views.

Usage::

    python -m benchmarks.top_down --checkpoint runs/topdown/ckpt.pt --save   # a model trained with top-down queries
    python -m benchmarks.top_down --quick                                      # a smoke run of seconds
    python -m benchmarks.top_down --checkpoint ... --first-scene 1000 --scenes 30  # scenes for choosing models

On held-out scenes (seeds never trained on), an agent walks ``--steps`` steps
(``--policy``: by default the count-based explorer of :mod:`agents.collectors`,
which heads for floor it has not been on, or the random walker; every frame
kept). After the first 1, 4, 16, 64 and all frames of the walk, the model
renders the top-down viewpoint
(:data:`world_model.frames.TOP_DOWN_VIEWPOINT`) from the representation of those
frames, summed and, past ``context_max`` frames, scaled to ``context_max``
frames' worth as GQNMaze's wrapper does. Each prediction (the prior mean) is
scored in PSNR against the true top-down view (``render_top_down``), and so are
two references: the mean top-down image of ``--mean-scenes`` training-seed
scenes, and the model given the same number of frames from another scene
(shuffled context). ``--samples`` prior samples give the per-pixel standard
deviation, averaged over the floor the walk has seen so far and over the floor
it has not (2D line of sight, :mod:`agents.coverage`), and their difference scene by
scene with its standard error (``std_unseen_minus_seen``: above zero where the
model is surer of what it has seen). Each frame count after the
first also gets the change from the one before, scene by scene, with its standard
error (``psnr_model_change``, ``std_unseen_change`` and ``..._se``). The paper's claim
(Eslami et al. 2018, the maze figure) as numbers: accuracy should rise and the
uncertainty about unseen floor fall as frames are seen. It needs a walk that
keeps finding new floor: the random walker sees little after its first 16 frames
(docs/results.md, top-down imagination).

Writes ``runs/benchmarks/top_down.json`` (``--save``: ``benchmarks/results/``)
and a PNG of one scene: the true map, then the prediction and its spread after
each frame count.
"""

from __future__ import annotations

import argparse
import math
import time

import gymnasium as gym
import numpy as np
import torch

import gqn_env  # noqa: F401  (registers the env ids)
from agents.collectors import POLICIES, make_policy, walk
from agents.coverage import visible
from agents.world_model_training import EVAL_SEED_BASE, training_seeds
from benchmarks._common import add_output_options, format_table, output_path, write_json
from gqn_env.envs.gqn_maze import load_world_model
from world_model.atomic import atomic_path
from world_model.evaluation import per_image_mse, per_image_psnr
from world_model.frames import TOP_DOWN_VIEWPOINT
from world_model.model import scale_to_context

FRAME_COUNTS = (1, 4, 16, 64)


def pixel_floor_points(scene, size: int) -> tuple[np.ndarray, np.ndarray]:
    """World ``(x, z)`` of each pixel centre of a ``size`` x ``size`` top-down view, and which lie on a room's floor.

    The view spans the floor plus a 1 m margin, widened on the short side to a square
    (MiniWorld's ``render_top_view``); rows run along +z, columns along +x.
    """
    min_x, max_x, min_z, max_z = scene.min_x - 1, scene.max_x + 1, scene.min_z - 1, scene.max_z + 1
    side = max(max_x - min_x, max_z - min_z)
    cx, cz = (min_x + max_x) / 2, (min_z + max_z) / 2
    centres = (np.arange(size) + 0.5) / size * side - side / 2
    gz, gx = np.meshgrid(cz + centres, cx + centres, indexing="ij")  # (size, size) each
    points = np.stack([gx.ravel(), gz.ravel()], axis=1)  # (size * size, 2), row-major
    on_floor = np.zeros(len(points), dtype=bool)
    for room in scene.grid_rooms:
        on_floor |= (
            (points[:, 0] >= room.min_x)
            & (points[:, 0] <= room.max_x)
            & (points[:, 1] >= room.min_z)
            & (points[:, 1] <= room.max_z)
        )
    return points, on_floor


def mean_and_se(values) -> tuple[float, float]:
    """Mean and standard error of the finite ``values`` (NaN when there are fewer than two)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if len(finite) < 2:
        return math.nan, math.nan
    return float(finite.mean()), float(finite.std(ddof=1) / math.sqrt(len(finite)))


@torch.inference_mode()
def imagine(
    model, encodings: torch.Tensor, images: np.ndarray, viewpoints: np.ndarray, samples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The top-down prediction (prior mean) from these frames and the per-pixel std of ``samples`` prior samples.

    ``encodings`` are the frames' own (``model.encode``), ``(n, C, h, w)``.
    Returns ``(mean (S, S, 3) in [0, 1], std (S, S) over samples, averaged over channels)``.
    """
    r = scale_to_context(encodings.sum(dim=0, keepdim=True), len(images), model.config.context_max)  # (1, C, h, w)
    context = (images[None], viewpoints[None])
    query = torch.as_tensor(TOP_DOWN_VIEWPOINT[None], device=model.device)
    mean = model.render(r, query, context=context, frames=len(images))[0].permute(1, 2, 0).cpu().numpy()
    draws = []
    for k in range(samples):
        generator = torch.Generator(device=model.device).manual_seed(seed * 1000 + k)
        draws.append(
            model.render(r, query, context=context, generator=generator, sample=True, frames=len(images))[0]
            .cpu()
            .numpy()
        )
    std = np.stack(draws).std(axis=0).mean(axis=0) if samples > 1 else np.zeros(mean.shape[:2])
    return mean, std


def run(args: argparse.Namespace) -> dict:
    """Every held-out scene's scores per frame count (see the module docstring)."""
    model = load_world_model(args.checkpoint)
    size = model.config.image_size
    env = gym.make(args.env_id, image_size=size, max_episode_steps=args.steps)
    scene = env.unwrapped
    start = time.perf_counter()
    truths = []
    for seed in training_seeds(0, 0, args.mean_scenes):
        env.reset(seed=seed)
        truths.append(scene.render_top_down())
    mean_top_down = np.mean(truths, axis=0) / 255.0  # (S, S, 3)

    walks, tops, floors = [], [], []
    for i in range(args.scenes):
        seed = EVAL_SEED_BASE + args.first_scene + i
        ep = walk(env, seed, args.steps, make_policy(args.policy, np.random.default_rng(seed)))
        tops.append(scene.render_top_down() / 255.0)
        points, on_floor = pixel_floor_points(scene, size)
        seen = np.zeros((len(ep.poses), len(points)), dtype=bool)  # seen[t]: seen by frames 0..t
        for t, pose in enumerate(ep.poses):
            seen[t] = visible(scene, points, pose) | (seen[t - 1] if t else False)
        walks.append(ep)
        floors.append((on_floor, seen))
    env.close()

    counts = sorted({min(c, args.steps) for c in FRAME_COUNTS} | {args.steps})
    with torch.inference_mode():  # each walk's frames encoded once; every prefix sums a slice
        codes = [model.encode(ep.images, ep.viewpoints) for ep in walks]
    per_scene = []
    for i, (ep, truth, (on_floor, seen)) in enumerate(zip(walks, tops, floors, strict=True)):
        j = (i + 1) % len(walks)
        other = walks[j]
        rows = []
        for count in counts:
            n = min(count, len(ep.images))
            mean, std = imagine(model, codes[i][:n], ep.images[:n], ep.viewpoints[:n], args.samples, seed=i)
            m = min(count, len(other.images))
            shuffled, _ = imagine(model, codes[j][:m], other.images[:m], other.viewpoints[:m], 0, seed=i)
            seen_now = seen[n - 1] & on_floor
            unseen_now = ~seen[n - 1] & on_floor
            flat_std = std.reshape(-1)
            rows.append(
                {
                    "frames": count,
                    "psnr_model": float(per_image_psnr(per_image_mse(mean[None], truth[None]))[0]),
                    "psnr_shuffled": float(per_image_psnr(per_image_mse(shuffled[None], truth[None]))[0]),
                    "psnr_mean_image": float(per_image_psnr(per_image_mse(mean_top_down[None], truth[None]))[0]),
                    "std_seen": float(flat_std[seen_now].mean()) if seen_now.any() else math.nan,
                    "std_unseen": float(flat_std[unseen_now].mean()) if unseen_now.any() else math.nan,
                    "floor_seen": float(seen_now.sum() / max(on_floor.sum(), 1)),
                    "prediction": mean,
                    "std": std,
                }
            )
        per_scene.append(rows)

    by_frames = []
    for j, count in enumerate(counts):
        rows = [scene_rows[j] for scene_rows in per_scene]
        entry = {"frames": "all" if count == args.steps else count}
        for key in ("psnr_model", "psnr_shuffled", "psnr_mean_image", "std_seen", "std_unseen", "floor_seen"):
            entry[key] = float(np.nanmean([r[key] for r in rows]))
        # Surer where it has looked? Unseen minus seen spread, scene by scene (scenes with both).
        gaps = [r["std_unseen"] - r["std_seen"] for r in rows]
        entry["std_unseen_minus_seen"], entry["std_unseen_minus_seen_se"] = mean_and_se(gaps)
        if j:  # the change from the previous frame count, scene by scene, and its standard error
            for key in ("psnr_model", "std_unseen"):
                change = [now[j][key] - now[j - 1][key] for now in per_scene]
                entry[f"{key}_change"], entry[f"{key}_change_se"] = mean_and_se(change)
        by_frames.append(entry)
    full = by_frames[-1]
    return {
        "psnr_model": full["psnr_model"],
        "psnr_mean_image": full["psnr_mean_image"],
        "psnr_shuffled": full["psnr_shuffled"],
        "gap_db_mean_image": full["psnr_model"] - full["psnr_mean_image"],
        "gap_db_shuffled": full["psnr_model"] - full["psnr_shuffled"],
        "by_frames": by_frames,
        "seconds": time.perf_counter() - start,
        "_figure": (tops[0], [r["prediction"] for r in per_scene[0]], [r["std"] for r in per_scene[0]], by_frames),
    }


def plot(truth: np.ndarray, predictions: list, stds: list, by_frames: list, path) -> None:
    """One scene: the true map, then the prediction (top row) and its spread (bottom row) per frame count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = len(predictions) + 1
    fig, axes = plt.subplots(2, columns, figsize=(1.9 * columns, 4))
    axes[0, 0].imshow(truth)
    axes[0, 0].set_title("true map", fontsize=9)
    axes[1, 0].axis("off")
    top = max(float(np.max(s)) for s in stds) or 1.0
    for j, (mean, std, entry) in enumerate(zip(predictions, stds, by_frames, strict=True), start=1):
        axes[0, j].imshow(np.clip(mean, 0, 1))
        axes[0, j].set_title(f"{entry['frames']} frames", fontsize=9)
        axes[1, j].imshow(std, cmap="magma", vmin=0, vmax=top)
        axes[1, j].set_title("spread of samples", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="world-model checkpoint (default: the bundled model)")
    parser.add_argument("--env-id", default="GQNMazeScene-S3-v0")
    parser.add_argument("--scenes", type=int, default=300, help="held-out scenes")
    parser.add_argument(
        "--first-scene",
        type=int,
        default=0,
        help="offset among the held-out scene seeds: choose between models on scenes (say 1000 on) "
        "other than the reported first 300",
    )
    parser.add_argument("--steps", type=int, default=216, help="walk length; every frame is kept")
    parser.add_argument(
        "--policy",
        choices=sorted(POLICIES),
        default="explorer",
        help="who walks: the count-based explorer, which heads for floor it has not been on (default), "
        "or the random walker",
    )
    parser.add_argument("--samples", type=int, default=8, help="prior samples for the spread")
    parser.add_argument("--mean-scenes", type=int, default=50, help="training-seed scenes of the mean top-down image")
    parser.add_argument("--quick", action="store_true", help="3 scenes, 20 steps, 2 samples: a smoke run")
    add_output_options(parser)
    args = parser.parse_args()
    if args.quick:
        args.scenes, args.steps, args.samples, args.mean_scenes = 3, 20, 2, 3
    result = run(args)
    truth, predictions, stds, by_frames = result.pop("_figure")
    columns = ["frames", "psnr_model", "psnr_mean_image", "psnr_shuffled", "std_seen", "std_unseen", "floor_seen"]
    print(format_table(by_frames, columns))
    print("spread on unseen minus seen floor, mean over scenes and its standard error:")
    print(format_table(by_frames, ["frames", "std_unseen_minus_seen", "std_unseen_minus_seen_se"]))
    changes = [
        {"frames": e["frames"], **{k: e[k] for k in e if k.endswith(("_change", "_change_se"))}} for e in by_frames[1:]
    ]
    print("change from the previous frame count, mean over scenes and its standard error:")
    print(
        format_table(
            changes,
            ["frames", "psnr_model_change", "psnr_model_change_se", "std_unseen_change", "std_unseen_change_se"],
        )
    )
    print(
        f"after all frames: model {result['psnr_model']:.2f} dB, "
        f"{result['gap_db_mean_image']:+.2f} dB over the mean top-down image, "
        f"{result['gap_db_shuffled']:+.2f} dB over shuffled context"
    )
    name = "top_down_quick" if args.quick else "top_down"
    path = write_json(name, {"args": vars(args), **result}, output_path(name, args.out, args.save))
    png = path.with_suffix(".png")
    plot(truth, predictions, stds, by_frames, png)
    print(f"wrote {path} and {png}")


if __name__ == "__main__":
    main()

"""Does the world model remember the goal box it saw? Imagined views of the goal, with and without its sightings.

Usage::

    python -m benchmarks.goal_recall            # about 5 minutes on one CPU core (1,200 scenes)
    python -m benchmarks.goal_recall --quick    # a smoke run, seconds
    python -m benchmarks.goal_recall --save     # benchmarks/results/goal_recall.{json,png}
    python -m benchmarks.goal_recall --checkpoint runs/x/model.pt --out runs/x/goal_recall.json

The probes of :mod:`benchmarks.representation_probes` ask a linear or small MLP read-out
for the goal's position. This benchmark asks the model's own read-out, its generator.

An exploring walker (:class:`agents.collectors.Explorer`) walks ``--scenes`` held-out
``GQNMazeScene`` mazes (3x3 rooms, seeds never trained on) for ``--steps`` steps. A scene
is kept if the goal box (the only red object) was in view at some step and the walk did
not end at it. Its query is a new pose in the goal's room, 1.2 to 3.5 m from the box and
facing it (the box in view), and the goal's pixels in the true view there are the red
pixels in the columns the box spans. The model renders the query (prior mean) in each
condition:

==========================  ==================================  ==================================
condition                   r summed over                       nearest-view input chosen from
==========================  ==================================  ==================================
``full``                    every frame                         every frame (what the wrappers imagine)
``r_full``                  every frame                         the frames that did not see the goal
``r_without_goal``          the frames that did not see it      the frames that did not see it
``r_sightings``             the frames that saw it (at most     the frames that did not see it
                            ``context_max``, spread out)
``r_others``                as many frames that did not see     the frames that did not see it
                            it, drawn at random
``r_full_alone``            every frame                         none (:func:`world_model.model.drop_views`)
``r_without_goal_alone``    the frames that did not see it      none
==========================  ==================================  ==================================

``r_full`` against ``r_without_goal`` is what r holds of the goal: the same nearest-view
input, r with and without the frames that saw the box. In a walk of about 175 frames the
sightings are a few percent of the sum; ``r_sightings`` against ``r_others`` asks the same
of a short context, the sightings alone against as many other frames of the walk, where
nothing dilutes them. ``full`` against ``r_full`` is what
the nearest-view input adds. The ``_alone`` pair is the same test without any view input,
which only a model trained with ``TrainConfig.view_dropout`` has learned to render (for
any other the black view is an input it never saw). Sums of more than ``context_max``
views are scaled to ``context_max`` views' worth, as the wrappers do.

Scores, per scene and condition: **goal redness**, the mean of ``R - max(G, B)`` over the
goal's pixels (the truth's is about 0.87; a scene without the box there scores near 0),
the same over the rest of the image (a control: a render that is redder everywhere is not
a remembered box), and PSNR on the goal's pixels and on the whole view. The paired
differences between conditions come with their standard errors and the share of scenes
where the difference is positive.

Prints a table and writes ``runs/benchmarks/goal_recall.json`` and ``.png`` (true views
and each condition's render for a few scenes; ``--save``: ``benchmarks/results/``;
``--out``: anywhere). Same ``--seed``, same numbers.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import gqn_env  # noqa: F401
from agents.collectors import make_policy, walk
from agents.world_model_training import EVAL_SEED_BASE
from benchmarks._common import add_output_options, format_table, output_path, write_json
from benchmarks.representation_probes import room_of
from gqn_env.envs import privileged
from gqn_env.envs.maze_scene import GOAL_SIZE
from gqn_env.envs.viewpoint import Pose
from world_model.atomic import atomic_path
from world_model.evaluation import per_image_psnr
from world_model.model import scale_to_context

#: Scene seeds: apart from the evaluation scenes, the RL probes' (+ 500_000) and the representation probes' (+ 600_000).
SEED_BASE = EVAL_SEED_BASE + 700_000
#: Each condition: (the frames r is summed over, the frames the nearest view is chosen from, a view input at all).
#: Frames: ``all``; ``without_goal``, those that did not see the goal; ``sightings``, those that did (at
#: most ``context_max``, spread over the walk); ``others``, as many frames that did not, drawn at random.
CONDITIONS = {
    "full": ("all", "all", True),
    "r_full": ("all", "without_goal", True),
    "r_without_goal": ("without_goal", "without_goal", True),
    "r_sightings": ("sightings", "without_goal", True),
    "r_others": ("others", "without_goal", True),
    "r_full_alone": ("all", "without_goal", False),
    "r_without_goal_alone": ("without_goal", "without_goal", False),
}
#: The paired differences reported: (name, condition, reference).
CONTRASTS = (
    ("r_holds_goal", "r_full", "r_without_goal"),
    ("sightings_hold_goal", "r_sightings", "r_others"),
    ("r_holds_goal_alone", "r_full_alone", "r_without_goal_alone"),
    ("view_adds", "full", "r_full"),
)
#: A pixel is the goal's if its redness ``R - max(G, B)`` is above this (the box's faces are 0.4 to 0.8).
GOAL_REDNESS = 0.25
QUERY_DISTANCE = (1.2, 3.5)


@dataclass
class Scene:
    """One kept scene: its walk, which frames saw the goal, the query and its true view."""

    seed: int
    images: np.ndarray  # (T, S, S, 3) uint8
    viewpoints: np.ndarray  # (T, D) float32
    saw_goal: np.ndarray  # (T,) bool: the goal was in view from this frame's pose
    query_viewpoint: np.ndarray  # (D,) float32
    truth: np.ndarray  # (S, S, 3) float32 in [0, 1]: the true view from the query pose
    goal_mask: np.ndarray  # (S, S) bool: the goal's pixels in the truth


def redness(images: np.ndarray) -> np.ndarray:
    """``R - max(G, B)`` per pixel of float images ``(..., 3)`` in [0, 1]: high on the red goal box only."""
    return images[..., 0] - np.maximum(images[..., 1], images[..., 2])


def goal_mask(truth: np.ndarray, distance: float) -> np.ndarray:
    """The goal's pixels in a view that faces the box from ``distance`` metres: red, in the columns it spans."""
    size = truth.shape[1]
    half_angle = math.atan2(GOAL_SIZE * math.sqrt(0.5), distance)  # the box's half-width at worst, diagonal on
    half_columns = math.tan(half_angle) / math.tan(privileged.HALF_FOV) * size / 2
    columns = np.abs(np.arange(size) + 0.5 - size / 2) <= half_columns + 0.5
    return (redness(truth) > GOAL_REDNESS) & columns[None, :]


def facing_goal(scene: Any, rng: np.random.Generator, tries: int = 2000) -> tuple[Pose, float] | None:
    """A free pose in the goal's room facing the goal, in view, :data:`QUERY_DISTANCE` away; and that distance."""
    goal = np.array([scene.goal.pos[0], scene.goal.pos[2]])
    room = room_of(scene, *goal)
    for _ in range(tries):
        pose = scene.sample_free_pose(rng)
        dx, dz = goal[0] - pose.x, goal[1] - pose.z
        distance = math.hypot(dx, dz)
        if room_of(scene, pose.x, pose.z) != room or not QUERY_DISTANCE[0] < distance < QUERY_DISTANCE[1]:
            continue
        pose = Pose(x=pose.x, z=pose.z, yaw=math.atan2(-dz, dx))  # MiniWorld's heading is (cos yaw, -sin yaw)
        if privileged.goal_visible_from(scene, pose.as_array()[None])[0]:
            return pose, distance
    return None


def record_scene(env: gym.Env, seed: int, steps: int, rng: np.random.Generator, min_frames: int) -> Scene | None:
    """Walk scene ``seed``; the :class:`Scene` if it qualifies (goal seen, not reached, a query found), else None."""
    ep = walk(env, seed, steps, make_policy("explorer", rng))
    scene = env.unwrapped
    saw_goal = privileged.goal_visible_from(scene, ep.poses)
    if not saw_goal.any() or scene.near(scene.goal) or (~saw_goal).sum() < min_frames:
        return None
    query = facing_goal(scene, rng)
    if query is None:
        return None
    pose, distance = query
    truth = scene.render_view(pose).astype(np.float32) / 255
    mask = goal_mask(truth, distance)
    if mask.sum() < 3:  # the box hidden behind an object after all
        return None
    return Scene(seed, ep.images, ep.viewpoints, saw_goal, scene.viewpoint(pose).astype(np.float32), truth, mask)


def collect(image_size: int, args: argparse.Namespace, env_kwargs: dict | None = None) -> tuple[list[Scene], int]:
    """Walk ``args.scenes`` scenes: ``(the kept ones, how many were walked)``."""
    kwargs = {"num_rows": 3, "num_cols": 3, **(env_kwargs or {})}
    env = gym.make("GQNMazeScene-v0", image_size=image_size, max_episode_steps=args.steps, **kwargs)
    try:
        scenes = [
            record_scene(env, SEED_BASE + i, args.steps, np.random.default_rng((args.seed, i)), args.min_frames)
            for i in range(args.scenes)
        ]
    finally:
        env.close()
    return [s for s in scenes if s is not None], len(scenes)


def frame_sets(saw_goal: np.ndarray, context_max: int, seed: int) -> dict[str, np.ndarray]:
    """The frame indices each condition's r and nearest view are drawn from (see :data:`CONDITIONS`)."""
    without = np.flatnonzero(~saw_goal)
    seen = np.flatnonzero(saw_goal)
    count = min(len(seen), context_max, len(without))
    sightings = seen[np.linspace(0, len(seen) - 1, count).round().astype(int)]  # spread over the sightings
    others = np.sort(np.random.default_rng(seed).choice(without, size=count, replace=False))
    return {"all": np.arange(len(saw_goal)), "without_goal": without, "sightings": sightings, "others": others}


@torch.inference_mode()
def render_conditions(model: Any, scene: Scene) -> dict[str, np.ndarray]:
    """The query rendered (prior mean) in every condition of :data:`CONDITIONS`: ``{name: (S, S, 3) float32}``."""
    encodings = model.encode(scene.images, scene.viewpoints)  # (T, *r_shape)
    context_max = int(model.config.context_max)
    frames = frame_sets(scene.saw_goal, context_max, scene.seed)
    r = {
        name: scale_to_context(encodings[torch.as_tensor(index)].sum(0, keepdim=True), len(index), context_max)
        for name, index in frames.items()
    }
    query = scene.query_viewpoint[None]
    renders = {}
    for name, (r_frames, view_frames, with_view) in CONDITIONS.items():
        index = frames[view_frames]
        context = (scene.images[index][None], scene.viewpoints[index][None])
        drop = None if with_view else np.ones(1, dtype=bool)
        image = model.render(r[r_frames], query, context=context, frames=len(frames[r_frames]), drop_view=drop)
        renders[name] = image[0].permute(1, 2, 0).cpu().numpy()
    return renders


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of two float arrays in [0, 1], floored as the evaluation's (:func:`per_image_psnr`)."""
    return float(per_image_psnr(np.mean((a - b) ** 2)))


def score(render: np.ndarray, scene: Scene) -> dict[str, float]:
    """Goal redness, redness elsewhere, PSNR on the goal's pixels and on the whole view."""
    mask = scene.goal_mask
    red = redness(render)
    return {
        "goal_redness": float(red[mask].mean()),
        "other_redness": float(red[~mask].mean()),
        "goal_psnr": psnr(render[mask], scene.truth[mask]),
        "psnr": psnr(render, scene.truth),
    }


def mean_and_error(values: np.ndarray) -> dict[str, float]:
    """Mean, standard error and share above zero of per-scene values."""
    n = len(values)
    return {
        "mean": float(values.mean()),
        "se": float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
        "share_positive": float((values > 0).mean()),
    }


def summarize(scores: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Per-condition means and the paired contrasts of :data:`CONTRASTS`, over the kept scenes."""
    measures = ("goal_redness", "other_redness", "goal_psnr", "psnr")
    table = {c: {m: np.array([s[c][m] for s in scores]) for m in measures} for c in CONDITIONS}
    conditions = [{"condition": c, **{m: float(v.mean()) for m, v in table[c].items()}} for c in table]
    truth = {m: float(np.mean([s["truth"][m] for s in scores])) for m in ("goal_redness", "other_redness")}
    conditions.append({"condition": "truth", **truth})
    contrasts = [
        {"contrast": name, "minus": f"{a} - {b}", "measure": m, **mean_and_error(table[a][m] - table[b][m])}
        for name, a, b in CONTRASTS
        for m in measures
    ]
    return {"conditions": conditions, "contrasts": contrasts}


def run(args: argparse.Namespace, model: Any = None, env_kwargs: dict | None = None) -> tuple[dict, list]:
    """Walk, render and score: ``(payload for the JSON, the strip's rows)``; ``model`` defaults to the bundled one."""
    from gqn_env.envs.gqn_maze import load_world_model

    model = load_world_model(args.checkpoint) if model is None else model
    model.eval()
    if not model.config.view_channels:
        raise ValueError("goal_recall compares nearest-view inputs: it needs a model with view_channels > 0")
    start = time.perf_counter()
    scenes, walked = collect(model.config.image_size, args, env_kwargs)
    if not scenes:
        raise RuntimeError(f"None of the {walked} scenes qualified (goal seen, not reached, a query pose found)")
    scores, strip = [], []
    for scene in scenes:
        renders = render_conditions(model, scene)
        scores.append({name: score(image, scene) for name, image in renders.items()})
        scores[-1]["truth"] = score(scene.truth, scene)  # its redness: what a render that drew the box would score
        if len(strip) < args.strip_scenes:
            strip.append({"truth": scene.truth, **renders})
    payload = {
        "args": vars(args),
        "model": {
            "checkpoint": args.checkpoint or "bundled",
            "image_size": model.config.image_size,
            "context_max": int(model.config.context_max),
            "view_dropout": float(model.config.view_dropout),
        },
        "scenes_walked": walked,
        "scenes": len(scenes),
        "frames_per_scene": float(np.mean([len(s.images) for s in scenes])),
        "goal_frames_per_scene": float(np.mean([s.saw_goal.sum() for s in scenes])),
        "goal_pixels_per_scene": float(np.mean([s.goal_mask.sum() for s in scenes])),
        **summarize(scores),
        "seconds": round(time.perf_counter() - start, 1),
    }
    return payload, strip


def save_strip(strip: list[dict[str, np.ndarray]], path: Any) -> None:
    """A grid a person can open: one row per scene, the true view then each condition's render."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = ["truth", *CONDITIONS]
    fig, axes = plt.subplots(len(strip), len(columns), figsize=(1.5 * len(columns), 1.5 * len(strip)), squeeze=False)
    for row, line in zip(strip, axes, strict=True):
        for name, ax in zip(columns, line, strict=True):
            ax.imshow(np.clip(row[name], 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
    for name, ax in zip(columns, axes[0], strict=True):
        ax.set_title(name.replace("_", " "), fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def print_tables(payload: dict) -> None:
    """The per-condition means and the paired contrasts."""
    print(format_table(payload["conditions"], ["condition", "goal_redness", "other_redness", "goal_psnr", "psnr"]))
    print(f"{payload['scenes']} of {payload['scenes_walked']} scenes kept")
    print()
    print(format_table(payload["contrasts"], ["contrast", "minus", "measure", "mean", "se", "share_positive"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="default: the bundled model")
    parser.add_argument("--scenes", type=int, default=1200, help="scenes walked (about a third qualify)")
    parser.add_argument("--steps", type=int, default=200, help="steps per walk")
    parser.add_argument("--min-frames", type=int, default=16, help="fewest frames without the goal a kept walk has")
    parser.add_argument("--strip-scenes", type=int, default=6, help="rows of the PNG")
    parser.add_argument("--seed", type=int, default=0, help="walks and query poses")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--quick", action="store_true", help="30 scenes of 60 steps: a smoke run of seconds")
    add_output_options(parser)
    args = parser.parse_args()
    if args.quick:
        args.scenes, args.steps, args.min_frames, args.strip_scenes = 30, 60, 4, 3
    torch.set_num_threads(args.threads)
    payload, strip = run(args)
    print_tables(payload)
    name = "goal_recall_quick" if args.quick else "goal_recall"
    json_path = output_path(name, args.out, args.save)
    png = json_path.with_suffix(".png")
    save_strip(strip, png)
    payload["strip"] = png.name
    path = write_json(name, payload, json_path)
    print(f"wrote {path} and {png}")


if __name__ == "__main__":
    main()

"""Probes: what the maze task needs, read from each candidate observation.

Usage::

    python -m benchmarks.rl_probes                 # about 10 minutes on 2 CPU cores
    python -m benchmarks.rl_probes --quick         # a smoke run

An exploring walker (forward with some random turns, turning away from walls)
walks ``--scenes`` held-out GQNMaze scenes (seeds never used to train the
bundled world model). At every step the benchmark records each candidate
observation and the ground truth the agent never observes
(:mod:`gqn_env.envs.privileged`):

* ``goal_visible``: is the goal box in view (binary, balanced accuracy);
* ``goal_bearing``: its bearing in the image, on frames where it is in view (R^2);
* ``goal_memory``: the goal's egocentric position (forward, left), on frames where
  it is *not* in view but was seen earlier in the episode (R^2): memory;
* ``free_ahead``: free distance ahead to the nearest wall or object (R^2);
* ``doorway``: cos and sin of the nearest doorway's bearing (R^2).

Candidates: the bundled model's ``representation`` (mean over the episode),
``view_encoding`` (the current frame's vector), ``patches`` (the current frame's
per-patch map), ``landmarks`` (each feature channel's peak of the episode and
where it was seen from), ``map`` (the episode's mean of the map head's channels,
for a model that has one) and combinations with the ``viewpoint``; references: the 4
stacked 64x64 frames the pixel agent sees, reduced to the representation's
width by a fixed random projection and by PCA (fit on the training scenes),
and the representation of another scene at the same step (``shuffled``).

Linear and MLP probes are fit on the first two thirds of the scenes and scored
on the rest (:mod:`world_model.probes`). Prints a table and writes
``runs/benchmarks/rl_probes.json`` (``--save``: the committed
``benchmarks/results/rl_probes.json``; ``--out``: anywhere).
"""

from __future__ import annotations

import argparse
import math
import time

import gymnasium as gym
import numpy as np
import torch

import gqn_env  # noqa: F401
from agents.world_model_training import EVAL_SEED_BASE
from benchmarks._common import add_output_options, format_table, write_json
from gqn_env.envs import privileged
from gqn_env.envs.gqn_maze import load_world_model
from world_model.probes import fit_probe

#: Probe scenes: far from the evaluation scenes (EVAL_SEED_BASE + i) and from every training seed.
PROBE_SEED_BASE = EVAL_SEED_BASE + 500_000
STACK = 4
TARGETS = ("goal_visible", "goal_bearing", "goal_memory", "free_ahead", "doorway")


def walk(env: gym.Env, seed: int, steps: int, rng: np.random.Generator) -> list[dict]:
    """One episode of the exploring walker; per step the observation and the privileged ground truth."""
    obs, _ = env.reset(seed=seed)
    scene = env.unwrapped
    stack = [obs["image"]] * STACK
    seen_goal = False
    records = []
    turn = 0
    for _ in range(steps):
        visible = privileged.goal_visible(scene)
        free = float(privileged.obstacle_distances(scene, np.zeros(1))[0])
        _, door = privileged.nearest_doorway(scene)
        forward, left = privileged.goal_egocentric(scene)
        side = max(scene.max_x - scene.min_x, scene.max_z - scene.min_z)
        records.append(
            {
                "representation": obs["representation"],
                "view_encoding": obs["view_encoding"],
                "patches": obs["patches"].reshape(-1),
                "landmarks": obs["landmarks"].reshape(-1),
                "map": obs["map"].reshape(-1) if "map" in obs else None,  # a model with a map head only
                "viewpoint": obs["viewpoint"],
                "pixels": np.concatenate(stack, axis=-1),  # (64, 64, 12) uint8, as VecFrameStack gives
                "goal_visible": visible,
                "goal_bearing": privileged.bearing(scene, np.array([scene.goal.pos[0], scene.goal.pos[2]]))
                / privileged.HALF_FOV,
                "goal_memory": np.array([forward, left]) / side,
                "remembered": seen_goal and not visible,
                "free_ahead": min(free, 2 * scene.room_size) / scene.room_size,
                "doorway": np.array([math.cos(door), math.sin(door)]),
            }
        )
        seen_goal = seen_goal or visible
        # Walker: keep turning one way for a few steps when a wall is close, else mostly forward.
        if turn:
            action, turn = (0 if turn > 0 else 1), turn - int(np.sign(turn))
        elif free < 0.9:
            turn = int(rng.integers(2, 7)) * (1 if rng.random() < 0.5 else -1)
            action = 0 if turn > 0 else 1
        else:
            action = int(rng.choice(3, p=[0.15, 0.15, 0.7]))
        obs, _, terminated, truncated, _ = env.step(action)
        stack = [*stack[1:], obs["image"]]
        if terminated or truncated:
            break
    return records


def collect(args: argparse.Namespace) -> list[list[dict]]:
    keys = ("representation", "view_encoding", "patches", "landmarks", "viewpoint", "image")
    model = load_world_model(args.checkpoint)
    keys += ("map",) if model.config.map_channels else ()
    env = gym.make("GQNMaze-S2-v0", model=model, image_size=64, obs_keys=keys, max_episode_steps=args.episode_steps)
    rng = np.random.default_rng(args.seed)
    episodes = [walk(env, PROBE_SEED_BASE + i, args.episode_steps, rng) for i in range(args.scenes)]
    env.close()
    return episodes


def features(episodes: list[list[dict]], train_scenes: int, width: int, seed: int) -> dict[str, list[np.ndarray]]:
    """Each candidate's features, one ``(T_i, F)`` array per episode."""

    def stacked(key: str) -> list[np.ndarray]:
        return [np.stack([r[key] for r in ep]).astype(np.float32) for ep in episodes]

    rep, encoding = stacked("representation"), stacked("view_encoding")
    patches, vp, landmarks = stacked("patches"), stacked("viewpoint"), stacked("landmarks")
    pixels = [np.stack([r["pixels"].reshape(-1) for r in ep]).astype(np.float32) / 255 for ep in episodes]
    rng = np.random.default_rng(seed)
    projection = rng.standard_normal((pixels[0].shape[1], width)).astype(np.float32) / math.sqrt(pixels[0].shape[1])
    # PCA of the training scenes' stacked frames, by SVD of a sample of them.
    train_pixels = np.concatenate(pixels[:train_scenes])
    sample = train_pixels[rng.choice(len(train_pixels), min(len(train_pixels), 3000), replace=False)]
    mean = sample.mean(axis=0)
    _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
    components = vt[:width].T  # (P, width)
    # Another scene's representation at the same step (clipped to that episode's length).
    shuffled = [
        rep[(i + 1) % len(rep)][np.minimum(np.arange(len(r)), len(rep[(i + 1) % len(rep)]) - 1)]
        for i, r in enumerate(rep)
    ]
    join = lambda *parts: [np.concatenate(p, axis=1) for p in zip(*parts, strict=True)]  # noqa: E731
    return {
        "pixels_random_projection": [p @ projection for p in pixels],
        "pixels_pca": [(p - mean) @ components for p in pixels],
        "shuffled_representation": shuffled,
        "representation": rep,
        "view_encoding": encoding,
        "patches": patches,
        "representation+view_encoding+viewpoint": join(rep, encoding, vp),
        "representation+patches+viewpoint": join(rep, patches, vp),
        "landmarks": landmarks,
        "patches+view_encoding+viewpoint": join(patches, encoding, vp),
        "patches+view_encoding+landmarks+viewpoint": join(patches, encoding, landmarks, vp),
    } | ({"map": (m := stacked("map")), "map+viewpoint": join(m, vp)} if episodes[0][0]["map"] is not None else {})


def targets(episodes: list[list[dict]]) -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
    """Each target's values and the mask of frames it is defined on, per episode."""
    out = {}
    for name in TARGETS:
        values = [np.stack([np.asarray(r[name], np.float64) for r in ep]) for ep in episodes]
        if name == "goal_bearing":
            masks = [np.array([r["goal_visible"] for r in ep]) for ep in episodes]
        elif name == "goal_memory":
            masks = [np.array([r["remembered"] for r in ep]) for ep in episodes]
        else:
            masks = [np.ones(len(ep), bool) for ep in episodes]
        out[name] = (values, masks)
    return out


def run_probes(args: argparse.Namespace) -> tuple[list[dict], dict]:
    start = time.perf_counter()
    episodes = collect(args)
    collect_seconds = time.perf_counter() - start
    train_scenes = (2 * len(episodes)) // 3
    feats = features(episodes, train_scenes, args.width, args.seed)
    if args.candidates:
        feats = {k: v for k, v in feats.items() if k in args.candidates}
    truths = targets(episodes)
    counts = {}
    rows = []
    for candidate, per_episode in feats.items():
        row: dict = {"observation": candidate, "width": int(per_episode[0].shape[1])}
        for name, (values, masks) in truths.items():
            split = {}
            for part, sl in (("train", slice(0, train_scenes)), ("test", slice(train_scenes, None))):
                x = np.concatenate([f[m] for f, m in zip(per_episode[sl], masks[sl], strict=True)])
                y = np.concatenate([v[m] for v, m in zip(values[sl], masks[sl], strict=True)])
                split[part] = (x, y)
            counts[name] = {"train": len(split["train"][1]), "test": len(split["test"][1])}
            if min(counts[name].values()) < 10:
                continue  # too few frames (quick runs)
            for kind in ("linear", "mlp"):
                result = fit_probe(
                    *split["train"], *split["test"], kind=kind, binary=name == "goal_visible", epochs=args.epochs
                )
                row[f"{name}/{kind}"] = round(result.score, 3)
        rows.append(row)
        print(f"{candidate}: done", flush=True)
    info = {"frames": counts, "collect_seconds": collect_seconds, "train_scenes": train_scenes}
    return rows, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=90)
    parser.add_argument("--episode-steps", type=int, default=160)
    parser.add_argument("--width", type=int, default=64, help="width of the pixel references (r's width)")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default=None, help="world model (default: the bundled one)")
    parser.add_argument("--candidates", nargs="+", default=None, help="probe only these observations (default: all)")
    parser.add_argument("--quick", action="store_true", help="6 scenes of 40 steps: a smoke run")
    add_output_options(parser)
    args = parser.parse_args()
    if args.quick:
        args.scenes, args.episode_steps, args.epochs = 6, 40, 50
    torch.manual_seed(args.seed)
    rows, info = run_probes(args)
    columns = ["observation", "width"] + [f"{t}/{k}" for t in TARGETS for k in ("linear", "mlp")]
    print(format_table(rows, columns))
    print("frames per target (train/test):", {k: f"{v['train']}/{v['test']}" for k, v in info["frames"].items()})
    name = "rl_probes_quick" if args.quick else "rl_probes"
    path = write_json(name, {"args": vars(args), "rows": rows, **info}, args.out, args.save)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

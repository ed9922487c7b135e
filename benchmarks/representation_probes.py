"""What r encodes: probes, scene retrieval and interpolation of the world model's scene representation.

Usage::

    python -m benchmarks.representation_probes            # about 8 minutes on one CPU core (1,440 scenes)
    python -m benchmarks.representation_probes --quick    # a smoke run, seconds
    python -m benchmarks.representation_probes --save     # benchmarks/results/representation_probes.{json,png}

An exploring walker (:class:`agents.collectors.Explorer`) walks ``--scenes``
held-out ``GQNMazeScene`` mazes (3x3 rooms, seeds never used to train the
bundled world model) for ``--steps`` steps, at the model's image size. A
scene's representation r is the model's representation network summed over
the walk's frames and scaled to ``context_max`` frames' worth (the mean
encoding times ``context_max``, what :class:`gqn_env.wrappers.RepresentationState`
renders from). Three measures, each against a reference:

1. **Probes** (:mod:`world_model.probes`, linear and MLP, fit on the first two
   thirds of the scenes and scored on the rest) from r to the goal box's
   position ``(x, z)`` in scene-normalised coordinates ([-1, 1], the viewpoint's
   scaling; R^2), on all scenes, on the scenes whose walk had the goal in
   view at some step, and on those of them whose walk did not end at the goal
   (``goal_xz_seen_not_reached``: a walk that reaches the goal ends there, so its
   shape alone points at it); and to every room's wall texture (one 12-way softmax head
   per room; accuracy over all rooms and over the rooms the walk entered).
   References: the same probes on the r of another scene (``shuffled_r``: each
   scene's targets paired with the next scene's r), on a random projection of
   the walk's mean image to r's width (``pixels_random_projection``), on where
   the walk ended (``last_viewpoint``: the geometry of the walk, no image), and chance
   (R^2 0, the training mean; accuracy 1 / textures). For a model with a map head,
   r's two parts are probed alone too (``r_scene``, ``r_map``: item 2).
2. **Scene retrieval** (view invariance): for ``--retrieval-scenes`` held-out
   scenes, r of one part of the walk is matched to r of the other part among
   all those scenes (nearest neighbour after removing the mean over the
   scenes, cosine or Euclidean); top-1 and top-5 accuracy. Parts: even against
   odd frames (``interleaved``: neighbouring views) and first against second
   half of the walk (``halves``: mostly other places and rooms). References:
   chance 1 / N and the same retrieval on the mean image of the same frames,
   full (``pixels_mean``) and randomly projected to r's width. For a model with
   a map head, r's two parts are also matched alone: ``r_scene``, the pooled
   vector of the paper's r (what agents observe), and ``r_map``, the map head's
   learned channels (a floor grid for ``grid`` and ``coverage`` heads, which holds
   the places each part of the walk saw). A ``coverage`` head's footprint channel
   (how many views looked at each floor cell: the viewpoints' doing, no weight's)
   is matched alone as a reference, ``footprints``, and r without it as
   ``r_no_footprints``.
3. **Interpolation**: renders (prior mean) at a fixed query pose (a free pose
   in a room scene A's walk entered, looking at the room's centre; not one of
   the walk's frames) from ``(1 - a) r_A + a r_B`` for ``--pairs`` pairs of
   held-out scenes, with the nearest-view input taken from A's frames and from
   B's; the pixel MSE to A's and to B's true view at that pose along ``a``; how
   much the render moves when only r goes from A's to B's, when only the
   nearest-view input does, against how much the two true views differ. And the strip
   (``<name>.png`` next to the JSON): that interpolation for the first pair,
   and the query pose moved within scene A to another such pose in its room
   (true views above, renders from r_A below).

Prints tables and writes ``runs/benchmarks/representation_probes.json`` and
``.png`` (``--save``: ``benchmarks/results/``; ``--out``: anywhere). Same
``--seed``, same numbers.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import gqn_env  # noqa: F401
from agents.collectors import make_policy, walk
from agents.world_model_training import EVAL_SEED_BASE
from benchmarks._common import add_output_options, format_table, output_path, write_json
from gqn_env.envs import privileged
from gqn_env.envs.viewpoint import Pose, pose_to_viewpoint
from world_model.atomic import atomic_path
from world_model.probes import fit_classifier, fit_probe

#: Scene seeds: far from the evaluation scenes (EVAL_SEED_BASE + i), the RL probe scenes (+ 500_000) and training.
SEED_BASE = EVAL_SEED_BASE + 600_000
KINDS = ("linear", "mlp")
#: Probe features: r and its references.
PROBE_FEATURES = ("r", "shuffled_r", "pixels_random_projection", "last_viewpoint")
#: Mixing weights of the interpolation (the strip shows each).
ALPHAS = tuple(np.linspace(0.0, 1.0, 9).round(3))


@dataclass
class SceneRecord:
    """What one walk of one scene leaves for the measures."""

    seed: int
    encodings: np.ndarray  # (T, R) float32: the representation network's output per frame
    mean_pixels: dict[str, np.ndarray]  # part -> (S*S*3,) float32 mean image in [0, 1]
    goal_xz: np.ndarray  # (2,) the goal box's position, scene-normalised to [-1, 1]
    goal_seen: bool  # the goal was in view at some step of the walk
    goal_reached: bool  # the walk ended at the goal (the scene terminates there): its end points at the goal
    last_viewpoint: np.ndarray  # (D,) float32: where the walk ended, a reference for the goal probes
    textures: np.ndarray  # (rooms,) int64: index of each room's wall texture in the scene's texture list
    visited: np.ndarray  # (rooms,) bool: the walk entered the room
    num_textures: int  # length of the scene's wall texture list: the texture probe's classes
    # Interpolation scenes only: the frames (the renders' context), a query pose and true views.
    images: np.ndarray | None = None  # (T, S, S, 3) uint8
    viewpoints: np.ndarray | None = None  # (T, D) float32
    query_pose: np.ndarray | None = None  # (4,) x, z, yaw, pitch: a free pose facing its room's centre
    query_viewpoint: np.ndarray | None = None  # (D,) float32: its viewpoint
    query_view: np.ndarray | None = None  # (S, S, 3) uint8: this scene's view from query_pose
    partner_view: np.ndarray | None = None  # (S, S, 3): this scene's view from the partner scene's query_pose
    path_viewpoints: np.ndarray | None = None  # (P, D): the pose path of the strip
    path_views: np.ndarray | None = None  # (P, S, S, 3) true views along it


def part_indices(frames: int) -> dict[str, np.ndarray]:
    """Frame indices of each part of a walk of ``frames`` frames (the retrieval's two sides of each split)."""
    index = np.arange(frames)
    return {
        "all": index,
        "even": index[0::2],
        "odd": index[1::2],
        "first": index[: frames // 2],
        "second": index[frames // 2 :],
    }


#: Each retrieval split's (query part, key part).
SPLIT_PARTS = {"interleaved": ("even", "odd"), "halves": ("first", "second")}


def room_of(scene: Any, x: float, z: float) -> int | None:
    """Index in ``scene.grid_rooms`` of the room holding floor point ``(x, z)``, None in a doorway."""
    for i, room in enumerate(scene.grid_rooms):
        if room.min_x <= x <= room.max_x and room.min_z <= z <= room.max_z:
            return i
    return None


def goal_seen(scene: Any, poses: np.ndarray) -> bool:
    """Whether the goal was in view (:func:`gqn_env.envs.privileged.goal_visible`) from any of ``poses``."""
    return bool(privileged.goal_visible_from(scene, poses).any())


def facing_room_centre(scene: Any, rooms: set[int], rng: np.random.Generator) -> Pose:
    """A collision-free pose inside one of ``rooms`` (any room if empty) that looks at its room's centre.

    A view across the room, not a close-up of the nearest wall.
    """
    for _ in range(1000):
        pose = scene.sample_free_pose(rng)
        room = room_of(scene, pose.x, pose.z)
        if room is not None and (not rooms or room in rooms):
            box = scene.grid_rooms[room]
            dx, dz = (box.min_x + box.max_x) / 2 - pose.x, (box.min_z + box.max_z) / 2 - pose.z
            if math.hypot(dx, dz) < (box.max_x - box.min_x) / 4:
                continue  # too near the centre to look across the room
            return Pose(x=pose.x, z=pose.z, yaw=math.atan2(-dz, dx))  # MiniWorld's heading is (cos yaw, -sin yaw)
    raise RuntimeError(f"No free pose found in rooms {sorted(rooms)}")


def pose_path(scene: Any, start: Pose, rng: np.random.Generator, count: int) -> list[Pose]:
    """``count`` poses from ``start`` to another free pose in its room facing the room's centre, linearly."""
    room = room_of(scene, start.x, start.z)
    end = facing_room_centre(scene, {room} if room is not None else set(), rng)
    turn = (end.yaw - start.yaw + math.pi) % (2 * math.pi) - math.pi  # the shorter way round
    return [
        Pose(
            x=start.x + t * (end.x - start.x),
            z=start.z + t * (end.z - start.z),
            yaw=(start.yaw + t * turn + math.pi) % (2 * math.pi) - math.pi,
        )
        for t in np.linspace(0.0, 1.0, count)
    ]


@torch.inference_mode()
def record_scene(
    env: gym.Env,
    model: Any,
    seed: int,
    steps: int,
    policy: str,
    rng: np.random.Generator,
    keep_frames: bool = False,
    partner_pose: np.ndarray | None = None,
    path_length: int = 0,
) -> SceneRecord:
    """Walk scene ``seed`` and keep what the measures need (frames, query and true views when ``keep_frames``)."""
    ep = walk(env, seed, steps, make_policy(policy, rng))
    scene = env.unwrapped
    encodings = model.encode(ep.images, ep.viewpoints).flatten(1).cpu().numpy()
    pixels = ep.images.reshape(len(ep.images), -1).astype(np.float32) / 255
    goal = Pose(x=float(scene.goal.pos[0]), z=float(scene.goal.pos[2]), yaw=0.0)
    visited_rooms = {room_of(scene, x, z) for x, z in ep.poses[:, :2]} - {None}
    record = SceneRecord(
        seed=seed,
        encodings=encodings,
        mean_pixels={part: pixels[index].mean(axis=0) for part, index in part_indices(len(pixels)).items()},
        goal_xz=pose_to_viewpoint(goal, scene.bounds, float(scene.agent.cam_height))[[0, 2]].astype(np.float64),
        goal_seen=goal_seen(scene, ep.poses),
        goal_reached=bool(scene.near(scene.goal)),
        last_viewpoint=ep.viewpoints[-1],
        textures=np.array([scene.wall_textures.index(room.wall_tex_name) for room in scene.grid_rooms]),
        visited=np.array([i in visited_rooms for i in range(len(scene.grid_rooms))]),
        num_textures=len(scene.wall_textures),
    )
    if keep_frames:
        query = facing_room_centre(scene, visited_rooms, rng)
        record.images, record.viewpoints = ep.images, ep.viewpoints
        record.query_pose, record.query_view = query.as_array(), scene.render_view(query)
        record.query_viewpoint = scene.viewpoint(query).astype(np.float32)
        if partner_pose is not None:
            record.partner_view = scene.render_view(Pose.from_array(partner_pose))
        if path_length:
            path = pose_path(scene, query, rng, path_length)
            record.path_viewpoints = np.stack([scene.viewpoint(p) for p in path]).astype(np.float32)
            record.path_views = np.stack([scene.render_view(p) for p in path])
    return record


def collect(model: Any, args: argparse.Namespace, env_kwargs: dict | None = None) -> list[SceneRecord]:
    """Walk ``args.scenes`` scenes; the first ``2 * args.pairs`` test scenes keep their frames (A, B, A, B, ...)."""
    kwargs = {"num_rows": 3, "num_cols": 3, **(env_kwargs or {})}
    env = gym.make("GQNMazeScene-v0", image_size=model.config.image_size, max_episode_steps=args.steps, **kwargs)
    train = train_scene_count(args.scenes)
    pair_scenes = range(train, min(args.scenes, train + 2 * args.pairs))
    records: list[SceneRecord] = []
    try:
        for i in range(args.scenes):
            keep = i in pair_scenes
            second = keep and (i - train) % 2 == 1  # scene B of a pair: also render A's query pose
            records.append(
                record_scene(
                    env,
                    model,
                    SEED_BASE + i,
                    args.steps,
                    args.policy,
                    np.random.default_rng((args.seed, i)),
                    keep_frames=keep,
                    partner_pose=records[i - 1].query_pose if second else None,
                    path_length=len(ALPHAS) + 2 if i == train else 0,  # the strip's pair
                )
            )
    finally:
        env.close()
    return records


def train_scene_count(scenes: int) -> int:
    """Scenes the probes are fit on: the first two thirds."""
    return (2 * scenes) // 3


def representation(record: SceneRecord, part: str, context_max: int) -> np.ndarray:
    """r of one part of the walk: the encodings' mean over its frames times ``context_max``."""
    index = part_indices(len(record.encodings))[part]
    return record.encodings[index].mean(axis=0) * context_max


def random_projection(dim: int, width: int, seed: int) -> np.ndarray:
    """A fixed ``(dim, width)`` Gaussian projection, scaled to keep lengths."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((dim, width)) / math.sqrt(dim)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- probes
def r_parts(r: np.ndarray, scene_width: int | None, footprint: int = 0) -> dict[str, np.ndarray]:
    """``(N, R)`` representations split into ``r_scene`` (the first ``scene_width``) and ``r_map``.

    Empty unless ``scene_width`` leaves a map head's channels after it. A coverage map
    head's last ``footprint`` floats are its footprint channel: per floor cell, how many
    views looked there, a function of the viewpoints alone that no weight changes. They
    are split off as ``footprints`` (a reference: what the walk's geometry gives), so that
    ``r_map`` is the map head's learned channels, and r without them is
    ``r_no_footprints``.
    """
    if scene_width is None or scene_width >= r.shape[1]:
        return {}
    end = r.shape[1] - footprint
    parts = {"r_scene": r[:, :scene_width], "r_map": r[:, scene_width:end]}
    if footprint:
        parts |= {"r_no_footprints": r[:, :end], "footprints": r[:, end:]}
    return parts


def r_layout(config: Any) -> tuple[int | None, int]:
    """``(scene_width, footprint)`` of a model config for :func:`r_parts`."""
    if not config.map_channels:
        return None, 0
    footprint = int(np.prod(config.map_shape[1:])) if config.map_layout == "coverage" else 0
    return config.r_channels, footprint


def probe_features(
    records: list[SceneRecord],
    train: int,
    context_max: int,
    seed: int,
    scene_width: int | None = None,
    footprint: int = 0,
) -> dict[str, np.ndarray]:
    """Each probe feature, ``(scenes, F)``; ``shuffled_r`` pairs each scene with the next one of its own split."""
    r = np.stack([representation(rec, "all", context_max) for rec in records])
    shuffled = np.concatenate([np.roll(r[:train], -1, axis=0), np.roll(r[train:], -1, axis=0)])
    pixels = np.stack([rec.mean_pixels["all"] for rec in records])
    projection = random_projection(pixels.shape[1], r.shape[1], seed)
    return {
        "r": r,
        "shuffled_r": shuffled,
        "pixels_random_projection": pixels @ projection,
        "last_viewpoint": np.stack([rec.last_viewpoint for rec in records]),
        **r_parts(r, scene_width, footprint),
    }


def run_probes(
    records: list[SceneRecord],
    context_max: int,
    epochs: int,
    seed: int,
    scene_width: int | None = None,
    footprint: int = 0,
) -> tuple[list[dict], dict]:
    """The probe table (one row per feature, and chance) and the probes' sample counts.

    ``scene_width``, ``footprint``: as in :func:`run_retrieval`; r's parts are probed alone too.
    """
    train = train_scene_count(len(records))
    feats = probe_features(records, train, context_max, seed, scene_width, footprint)
    goal = np.stack([rec.goal_xz for rec in records])
    seen = np.array([rec.goal_seen for rec in records])
    textures = np.stack([rec.textures for rec in records])
    visited = np.stack([rec.visited for rec in records])
    classes = records[0].num_textures
    is_train = np.arange(len(records)) < train
    reached = np.array([rec.goal_reached for rec in records])
    subsets = {
        "goal_xz": np.ones(len(records), bool),
        "goal_xz_seen": seen,
        "goal_xz_seen_not_reached": seen & ~reached,
    }
    counts = {
        name: {"train": int(np.sum(m & is_train)), "test": int(np.sum(m & ~is_train))} for name, m in subsets.items()
    }
    counts["texture"] = {"train": int(train), "test": len(records) - train}
    counts["texture_visited_rooms_test"] = int(visited[train:].sum())
    rows = []
    for name, x in feats.items():
        row: dict[str, Any] = {"feature": name, "width": int(x.shape[1])}
        for kind in KINDS:
            for target, mask in subsets.items():
                a, b = mask & is_train, mask & ~is_train
                if a.sum() < 5 or b.sum() < 2:
                    continue  # too few scenes (quick runs)
                result = fit_probe(x[a], goal[a], x[b], goal[b], kind=kind, epochs=epochs, seed=seed)
                row[f"{target}/{kind}"] = round(result.score, 3)
            result = fit_classifier(
                x[:train], textures[:train], x[train:], textures[train:], classes, kind=kind, epochs=epochs, seed=seed
            )
            mask = visited[train:]
            row[f"texture/{kind}"] = round(result.accuracy, 3)
            row[f"texture_balanced/{kind}"] = round(result.balanced_accuracy, 3)
            if mask.any():
                row[f"texture_visited/{kind}"] = round(
                    float(np.mean(result.predicted[mask] == textures[train:][mask])), 3
                )
        rows.append(row)
    chance = {"feature": "chance", "width": 0}
    for kind in KINDS:
        chance.update({f"{target}/{kind}": 0.0 for target in subsets})
        for target in ("texture", "texture_balanced", "texture_visited"):
            chance[f"{target}/{kind}"] = round(1 / classes, 3)
    rows.append(chance)
    return rows, {"scenes": counts, "train_scenes": train, "texture_classes": classes}


# ------------------------------------------------------------------------------------------- retrieval
def retrieval_accuracy(queries: np.ndarray, keys: np.ndarray, metric: str = "cosine", k: int = 1) -> float:
    """Share of queries whose own key (same row) is among their ``k`` nearest keys.

    Both sets are centred on their joint mean first (the direction all scenes share
    says nothing about which scene it is). Ties count against the query: the own
    key must be strictly nearer than all but ``k - 1`` others.

    Args:
        queries: ``(N, F)``, row i from scene i.
        keys: ``(N, F)``, row i from scene i.
        metric: ``"cosine"`` (similarity of directions) or ``"euclidean"``.
        k: How many nearest keys count as a hit.
    """
    queries, keys = np.asarray(queries, np.float64), np.asarray(keys, np.float64)
    if queries.shape != keys.shape or queries.ndim != 2 or len(queries) < 2:
        raise ValueError(f"queries and keys must be the same (N >= 2, F) shape, got {queries.shape}, {keys.shape}")
    centre = np.concatenate([queries, keys]).mean(axis=0)
    q, kk = queries - centre, keys - centre
    if metric == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        kk = kk / np.maximum(np.linalg.norm(kk, axis=1, keepdims=True), 1e-12)
        similarity = q @ kk.T
    elif metric == "euclidean":
        similarity = -np.sqrt(np.maximum(((q[:, None] - kk[None]) ** 2).sum(-1), 0.0))
    else:
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    own = np.diag(similarity)
    others = similarity >= own[:, None]
    np.fill_diagonal(others, False)
    return float(np.mean(others.sum(axis=1) < k))


def run_retrieval(
    records: list[SceneRecord], context_max: int, seed: int, scene_width: int | None = None, footprint: int = 0
) -> list[dict]:
    """Top-1/top-5 retrieval rows: feature x split, with chance.

    ``scene_width``: for a model with a map head, the width of r's first part (the
    pooled scene vector agents observe); its two parts are then also matched alone,
    as ``r_scene`` and ``r_map``; ``footprint``: the width of a coverage head's
    footprint channel, matched alone and left out of ``r_no_footprints`` (:func:`r_parts`).
    """
    n = len(records)
    width = records[0].encodings.shape[1]
    projection = random_projection(records[0].mean_pixels["all"].shape[0], width, seed)
    rows = []
    for split, (query_part, key_part) in SPLIT_PARTS.items():
        sides = {}
        for part in (query_part, key_part):
            pixels = np.stack([rec.mean_pixels[part] for rec in records])
            sides[part] = {
                "r": np.stack([representation(rec, part, context_max) for rec in records]),
                "pixels_random_projection": pixels @ projection,
                "pixels_mean": pixels,
            }
            sides[part].update(r_parts(sides[part]["r"], scene_width, footprint))
        for feature in sides[query_part]:
            q, k = sides[query_part][feature], sides[key_part][feature]
            rows.append(
                {
                    "split": split,
                    "feature": feature,
                    "width": int(q.shape[1]),
                    "scenes": n,
                    "top1/cosine": round(retrieval_accuracy(q, k, "cosine", 1), 3),
                    "top1/euclidean": round(retrieval_accuracy(q, k, "euclidean", 1), 3),
                    "top5/cosine": round(retrieval_accuracy(q, k, "cosine", min(5, n)), 3),
                    "chance_top1": round(1 / n, 4),
                    "chance_top5": round(min(5, n) / n, 4),
                }
            )
    return rows


# ------------------------------------------------------------------------------------------ interpolation
def _uint8(images: torch.Tensor) -> np.ndarray:
    """``(B, 3, S, S)`` floats in [0, 1] -> ``(B, S, S, 3)`` uint8."""
    return (images.clamp(0, 1).movedim(1, -1).cpu().numpy() * 255).round().astype(np.uint8)


@torch.inference_mode()
def render_mix(model: Any, r_a: np.ndarray, r_b: np.ndarray, viewpoint: np.ndarray, context: SceneRecord) -> np.ndarray:
    """Renders at one viewpoint from ``(1 - a) r_A + a r_B`` for each of :data:`ALPHAS`: ``(len(ALPHAS), S, S, 3)``."""
    alphas = torch.tensor(ALPHAS, dtype=torch.float32)[:, None]
    mixed = (1 - alphas) * torch.from_numpy(r_a) + alphas * torch.from_numpy(r_b)  # (A, R)
    r = mixed.reshape(len(ALPHAS), *model.config.representation_shape)
    queries = np.repeat(viewpoint[None], len(ALPHAS), axis=0)
    ctx = (context.images[None], context.viewpoints[None])
    return _uint8(model.render(r, queries, context=ctx, sample=False))


def _mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image mean squared error of uint8 images ``(..., S, S, 3)``, in [0, 1] units; broadcasts."""
    diff = (a.astype(np.float64) - b.astype(np.float64)) / 255
    return (diff**2).mean(axis=(-3, -2, -1))


def run_interpolation(model: Any, records: list[SceneRecord], context_max: int) -> tuple[dict, dict]:
    """MSE of r-interpolated renders over the pairs (A, B) of scenes that kept their frames; the first pair's strip."""
    kept = [rec for rec in records if rec.images is not None]
    pairs = list(zip(kept[0::2], kept[1::2], strict=False))
    curves: dict[str, list[np.ndarray]] = {k: [] for k in ("ctxA_vs_A", "ctxA_vs_B", "ctxB_vs_A", "ctxB_vs_B")}
    r_effect, context_effect = [], []
    strip: dict[str, np.ndarray] = {}
    for j, (a, b) in enumerate(pairs):
        r_a, r_b = representation(a, "all", context_max), representation(b, "all", context_max)
        renders = {
            name: render_mix(model, r_a, r_b, a.query_viewpoint, ctx) for name, ctx in (("ctxA", a), ("ctxB", b))
        }
        for name, images in renders.items():
            curves[f"{name}_vs_A"].append(_mse(images, a.query_view))
            curves[f"{name}_vs_B"].append(_mse(images, b.partner_view))
        r_effect.append(float(_mse(renders["ctxA"][0], renders["ctxA"][-1])))  # r from A's to B's, view input fixed
        context_effect.append(float(_mse(renders["ctxA"][0], renders["ctxB"][0])))  # view input changed, r_A fixed
        if j == 0:
            strip = {**renders, "truth_A": a.query_view, "truth_B": b.partner_view, "path_truth": a.path_views}
            r = torch.from_numpy(np.repeat(r_a[None], len(a.path_viewpoints), axis=0))
            with torch.inference_mode():
                rendered = model.render(
                    r.reshape(len(r), *model.config.representation_shape),
                    a.path_viewpoints,
                    context=(a.images[None], a.viewpoints[None]),
                    sample=False,
                )
            strip["path_render"] = _uint8(rendered)
    if not pairs:
        return {}, strip
    summary = {
        "pairs": len(pairs),
        "alphas": [float(x) for x in ALPHAS],
        "mse_along_alpha": {k: [round(float(x), 5) for x in np.mean(v, axis=0)] for k, v in curves.items()},
        "r_effect_mse": round(float(np.mean(r_effect)), 5),
        "context_effect_mse": round(float(np.mean(context_effect)), 5),
        "truth_A_vs_truth_B_mse": round(float(np.mean([_mse(a.query_view, b.partner_view) for a, b in pairs])), 5),
    }
    return summary, strip


def save_strip(strip: dict[str, np.ndarray], path: Path) -> None:
    """The interpolation strip as a PNG: two rows of r interpolation between scenes, two along a pose path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = len(ALPHAS) + 2
    rows = [
        ("r: A -> B, nearest view from A's frames", [strip["truth_A"], *strip["ctxA"], strip["truth_B"]]),
        ("r: A -> B, nearest view from B's frames", [strip["truth_A"], *strip["ctxB"], strip["truth_B"]]),
        ("pose path in scene A: true views", list(strip["path_truth"])),
        ("pose path in scene A: rendered from r_A", list(strip["path_render"])),
    ]
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.3 * columns, 1.55 * len(rows)))
    for (title, images), line in zip(rows, axes, strict=True):
        for c, ax in enumerate(line):
            ax.imshow(images[c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        line[0].set_title(title, fontsize=8, loc="left")
    for c, alpha in enumerate(ALPHAS, start=1):
        axes[0, c].set_xlabel(f"a={alpha:g}", fontsize=7)
    axes[0, 0].set_xlabel("true A", fontsize=7)
    axes[0, -1].set_xlabel("true B", fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ run
def run(args: argparse.Namespace, model: Any = None, env_kwargs: dict | None = None) -> tuple[dict, dict]:
    """All three measures: ``(payload for the JSON, strip images)``; ``model`` defaults to the bundled one."""
    from gqn_env.envs.gqn_maze import load_world_model

    model = load_world_model(args.checkpoint) if model is None else model
    model.eval()
    context_max = int(model.config.context_max)
    start = time.perf_counter()
    records = collect(model, args, env_kwargs)
    collect_seconds = time.perf_counter() - start
    scene_width, footprint = r_layout(model.config)
    probes, probe_info = run_probes(records, context_max, args.epochs, args.seed, scene_width, footprint)
    test = records[train_scene_count(len(records)) :]
    retrieval = run_retrieval(test[: args.retrieval_scenes], context_max, args.seed, scene_width, footprint)
    interpolation, strip = run_interpolation(model, test, context_max)
    payload = {
        "args": vars(args),
        "model": {
            "checkpoint": args.checkpoint or "bundled",
            "image_size": model.config.image_size,
            "representation_dim": int(np.prod(model.config.representation_shape)),
            "context_max": context_max,
            "view_channels": model.config.view_channels,
        },
        "scenes": len(records),
        "frames_per_scene": float(np.mean([len(rec.encodings) for rec in records])),
        "goal_seen_share": float(np.mean([rec.goal_seen for rec in records])),
        "goal_reached_share": float(np.mean([rec.goal_reached for rec in records])),
        "rooms_visited_share": float(np.mean([rec.visited.mean() for rec in records])),
        "probes": probes,
        "probe_counts": probe_info,
        "retrieval": retrieval,
        "interpolation": interpolation,
        "collect_seconds": round(collect_seconds, 1),
        "seconds": round(time.perf_counter() - start, 1),
    }
    return payload, strip


PROBE_COLUMNS = ["feature", "width"] + [
    f"{t}/{k}"
    for t in ("goal_xz", "goal_xz_seen", "goal_xz_seen_not_reached", "texture", "texture_visited")
    for k in KINDS
]
RETRIEVAL_COLUMNS = ["split", "feature", "width", "top1/cosine", "top1/euclidean", "top5/cosine", "chance_top1"]


def print_tables(payload: dict) -> None:
    """The probe, retrieval and interpolation tables."""
    print(format_table(payload["probes"], PROBE_COLUMNS))
    print("scenes per probe (train/test):", payload["probe_counts"]["scenes"])
    print()
    print(format_table(payload["retrieval"], RETRIEVAL_COLUMNS))
    interp = payload["interpolation"]
    if interp:
        print()
        rows = [
            {"alpha": a, **{k: v[i] for k, v in interp["mse_along_alpha"].items()}}
            for i, a in enumerate(interp["alphas"])
        ]
        print(format_table(rows, ["alpha", *interp["mse_along_alpha"]]))
        print(
            f"{interp['pairs']} pairs; render change from r alone (A's r -> B's r): {interp['r_effect_mse']:.4g}, "
            f"from the nearest-view input alone: {interp['context_effect_mse']:.4g}, "
            f"true A vs true B: {interp['truth_A_vs_truth_B_mse']:.4g} (MSE)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="default: the bundled model")
    parser.add_argument(
        "--scenes", type=int, default=1440, help="scenes walked; two thirds fit the probes (480 until 2026-12-07)"
    )
    parser.add_argument("--steps", type=int, default=200, help="steps per walk")
    parser.add_argument("--policy", default="explorer", choices=("explorer", "random"))
    parser.add_argument("--retrieval-scenes", type=int, default=150, help="held-out scenes matched among")
    parser.add_argument("--pairs", type=int, default=20, help="scene pairs of the interpolation")
    parser.add_argument("--epochs", type=int, default=300, help="most epochs of each probe")
    parser.add_argument("--seed", type=int, default=0, help="walks, probes and the random projection")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--quick", action="store_true", help="12 scenes of 40 steps: a smoke run of seconds")
    add_output_options(parser)
    args = parser.parse_args()
    if args.quick:
        args.scenes, args.steps, args.retrieval_scenes, args.pairs, args.epochs = 12, 40, 4, 1, 50
    torch.set_num_threads(args.threads)
    payload, strip = run(args)
    print_tables(payload)
    name = "representation_probes_quick" if args.quick else "representation_probes"
    json_path = output_path(name, args.out, args.save)
    png = json_path.with_suffix(".png")
    if strip:
        save_strip(strip, png)
        payload["strip"] = png.name
    path = write_json(name, payload, json_path)
    print(f"wrote {path}" + (f" and {png}" if strip else ""))


if __name__ == "__main__":
    main()

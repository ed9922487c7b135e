"""Train a GQN world model from agents walking through maze scenes.

This is the glue between the scene env (which renders frames) and the
``world_model`` package (which never imports MiniWorld):

* :func:`train_online` interleaves collection and training in one process: a
  collector walks one new scene every ``collect_every`` gradient steps (a fixed
  ratio of updates to collected frames), the buffer keeps the newest
  ``max_scenes`` scenes, and the trainer samples (context, query) batches from it.
* :func:`make_eval_scenes` builds held-out evaluation scenes (seeds never used in
  training): K context views from an agent's trajectory, query views rendered at
  other free poses in the rooms that trajectory visited.

Seeds: training scenes use seeds ``seed * 1_000_003 + i``; evaluation scenes use
``EVAL_SEED_BASE + i`` (far from any training seed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from agents.collectors import collect, make_policy, walk
from world_model.distributed import any_rank, sum_over_ranks

EVAL_SEED_BASE = 2_000_000_000


@dataclass
class OnlineSchedule:
    """How collection and training interleave.

    Attributes:
        env_id: Scene env id.
        warmup_scenes: Scenes collected before the first gradient step.
        steps_per_scene: Env steps walked per scene (one episode, cut short).
        frame_skip: Keep every ``frame_skip``-th frame of a walk.
        collect_every: Gradient steps between two newly collected scenes.
        max_scenes: Scenes kept in the buffer (oldest evicted).
        policy: ``random`` or ``explorer``.
        checkpoint_every_s: Seconds between checkpoints.
    """

    env_id: str = "GQNMazeScene-S3-v0"
    warmup_scenes: int = 400
    steps_per_scene: int = 216
    frame_skip: int = 4
    collect_every: int = 4
    max_scenes: int = 4000
    policy: str = "random"
    checkpoint_every_s: float = 600.0
    env_kwargs: dict[str, Any] = field(default_factory=dict)


def training_seeds(seed: int, start: int, count: int) -> list[int]:
    """Scene seeds for training run ``seed``: disjoint from :data:`EVAL_SEED_BASE` onwards."""
    return [(seed * 1_000_003 + i) % EVAL_SEED_BASE for i in range(start, start + count)]


@dataclass
class EvalScene:
    """A held-out scene: context views from a trajectory, query views at other poses."""

    context_images: np.ndarray  # (K, H, W, 3) uint8
    context_viewpoints: np.ndarray  # (K, D) float32
    query_images: np.ndarray  # (Q, H, W, 3) uint8
    query_viewpoints: np.ndarray  # (Q, D) float32

    def as_dict(self) -> dict[str, np.ndarray]:
        """The layout ``world_model.evaluate`` takes."""
        return dict(self.__dict__)


def _room_of(scene: Any, x: float, z: float) -> int | None:
    for i, room in enumerate(scene.grid_rooms):
        if room.min_x <= x <= room.max_x and room.min_z <= z <= room.max_z:
            return i
    return None


def make_eval_scenes(
    env: gym.Env,
    num_scenes: int,
    num_context: int = 16,
    num_queries: int = 8,
    steps: int = 200,
    policy: str = "random",
    seed_base: int = EVAL_SEED_BASE,
) -> list[EvalScene]:
    """Held-out evaluation scenes (see the module docstring).

    Context views are ``num_context`` frames spread evenly over a ``steps``-step walk;
    queries are rendered at free poses drawn in the rooms the walk visited.
    """
    scene = env.unwrapped
    out = []
    for i in range(num_scenes):
        seed = seed_base + i
        rng = np.random.default_rng(seed)
        ep = walk(env, seed, steps, make_policy(policy, rng))
        idx = np.linspace(0, len(ep.images) - 1, num_context).round().astype(int)
        visited = {_room_of(scene, x, z) for x, z in ep.poses[:, :2]} - {None}
        queries, qvps = [], []
        while len(queries) < num_queries:
            pose = scene.sample_free_pose(rng)
            if _room_of(scene, pose.x, pose.z) in visited:
                queries.append(scene.render_view(pose))
                qvps.append(scene.viewpoint(pose))
        out.append(EvalScene(ep.images[idx], ep.viewpoints[idx], np.stack(queries), np.stack(qvps)))
    return out


def _record_data_state(trainer: Any, buffer: Any, next_scene: int) -> None:
    """Keep what resuming and evaluation need beside the weights: the next scene and the mean image."""
    import torch

    trainer.extra["next_scene"] = next_scene
    if len(buffer):
        trainer.extra["mean_image"] = torch.from_numpy(buffer.mean_image().astype(np.float32))  # (S, S, 3)


def train_online(
    trainer: Any,
    buffer: Any,
    schedule: OnlineSchedule,
    budget_s: float | None = None,
    max_steps: int | None = None,
    seed: int = 0,
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
    first_scene: int = 0,
) -> dict[str, Any]:
    """Collect and train until the time budget or step count is spent.

    Args:
        trainer: A :class:`world_model.Trainer` sampling from ``buffer``.
        buffer: A :class:`world_model.SceneBuffer` (or anything with ``add_batch``).
        schedule: The interleaving schedule.
        budget_s: Wall-clock budget in seconds (collection included).
        max_steps: Stop after this many gradient steps in total.
        seed: Selects the training scene seeds and the walker's randomness.
        checkpoint_path: Where to save checkpoints (atomically) during and after training.
        progress: Show a tqdm bar.
        first_scene: Index of the first new training scene (to resume without repeats).

    Under ``torch.distributed`` (a :class:`world_model.distributed.DistributedTrainer`
    on each of W ranks), every rank collects its share of the scenes (scene index
    ``i`` goes to rank ``i % W``, one new scene per rank every ``collect_every * W``
    steps, so the ratio of scenes to global steps is that of one process), and the
    ranks agree at every step, by one small all-reduce, on when to checkpoint and
    when to stop: their clocks differ, and a rank that stopped alone would leave
    the others waiting in DDP's all-reduce. Rank 0 alone shows the progress bar.

    Returns:
        Summary: steps, scenes and frames collected (all ranks), seconds spent
        training and collecting (this rank).
    """
    if budget_s is None and max_steps is None:
        raise ValueError("Give budget_s or max_steps")
    rank, world = getattr(trainer, "rank", 0), getattr(trainer, "world_size", 1)  # DistributedTrainer: its rank
    env = gym.make(schedule.env_id, image_size=trainer.model.config.image_size, **schedule.env_kwargs)
    policy = make_policy(schedule.policy, np.random.default_rng(seed if world == 1 else [seed, rank]))
    next_scene = first_scene  # global scene counter, equal on every rank
    start = time.perf_counter()
    collect_s = 0.0

    def collect_scenes(count: int) -> int:
        """Collect scenes ``next_scene .. next_scene + count - 1`` of all ranks; this rank walks its share."""
        nonlocal next_scene, collect_s
        t0 = time.perf_counter()
        mine = [i for i in range(next_scene, next_scene + count) if i % world == rank]
        seeds = [training_seeds(seed, i, 1)[0] for i in mine]
        n = collect(
            env, buffer, seeds, schedule.steps_per_scene, policy, schedule.frame_skip, progress=count > 20 and progress
        )
        next_scene += count
        collect_s += time.perf_counter() - t0
        return n

    warmup = max(schedule.warmup_scenes - buffer.num_scenes * world, 0)  # all ranks' buffers together
    frames = collect_scenes(warmup) if schedule.warmup_scenes else 0
    progress = progress and rank == 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(budget_s) if budget_s else max_steps, unit="s" if budget_s else "step", desc="train")
    last_ckpt = time.perf_counter()
    steps = 0
    stats: dict[str, float] = {}
    while True:
        elapsed = time.perf_counter() - start
        stop = (budget_s is not None and elapsed >= budget_s) or (
            max_steps is not None and trainer.step_count >= max_steps
        )
        due = bool(checkpoint_path) and time.perf_counter() - last_ckpt >= schedule.checkpoint_every_s
        if world > 1:
            stop, due = any_rank(stop, due, device=trainer.device)
        if stop:
            break
        stats = trainer.step()
        steps += 1
        if steps % (schedule.collect_every * world) == 0:
            frames += collect_scenes(world)
        if due:
            _record_data_state(trainer, buffer, next_scene)
            trainer.save(checkpoint_path)
            last_ckpt = time.perf_counter()
        if bar is not None:
            bar.n = int(min(time.perf_counter() - start, budget_s)) if budget_s else trainer.step_count
            bar.set_postfix({k: f"{stats[k]:.4g}" for k in ("loss", "mse", "sigma") if k in stats}, refresh=False)
            bar.refresh()
    if bar is not None:
        bar.close()
    _record_data_state(trainer, buffer, next_scene)
    if checkpoint_path:
        trainer.save(checkpoint_path)
    env.close()
    total = time.perf_counter() - start
    if world > 1:
        frames = int(sum_over_ranks(frames, device=trainer.device))
    return {
        "steps": steps,
        "total_steps": trainer.step_count,
        "scenes_collected": next_scene - first_scene,
        "next_scene": next_scene,
        "frames_collected": frames,
        "seconds": total,
        "collect_seconds": collect_s,
        "train_seconds": total - collect_s,
        "last": stats,
    }

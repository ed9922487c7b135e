"""Train a GQN world model from agents walking through maze scenes: the one training entry point.

This is the glue between the scene env (which renders frames) and the
``world_model`` package (which never imports MiniWorld). Every world-model
training of the project goes through :func:`train`, driven by one
:class:`RunConfig`: ``gqn-gym train`` (also under torchrun) and
``benchmarks/world_model.py`` only fill a :class:`RunConfig` and report. Each mode
is decided once, before the loop:

* **one process or data-parallel**: torchrun's environment (``WORLD_SIZE`` > 1
  starts a process group and a :class:`~world_model.distributed.DistributedTrainer`);
* **scratch or resume**: ``resume`` and whether the checkpoint exists;
* **online or store-only**: an online run has a :class:`Collect` hook, an offline
  run has none.

The loop is plain: ``trainer.step()`` until the budget is spent, the periodic
work in :class:`Hook` objects (SB3 callbacks in miniature): :class:`Collect`
walks new scenes (a warm-up before the first step, then one new scene every
``collect_every`` steps, a fixed ratio of updates to collected frames),
:class:`Checkpoint` saves, :class:`Progress` draws the bar and :class:`Evaluate`
measures held-out PSNR at the end.

:func:`make_eval_scenes` builds held-out evaluation scenes (seeds never used in
training): K context views from an agent's trajectory, query views rendered at
other free poses in the rooms that trajectory visited.

Seeds: training scenes use seeds ``seed * 1_000_003 + i``; evaluation scenes use
``EVAL_SEED_BASE + i`` (far from any training seed).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist

from agents.collectors import collect, make_policy, walk
from agents.training_loop import Checkpoint, Hook, Progress, TrainingLoop
from world_model.checkpoint import CheckpointError, check_compatible, load_checkpoint
from world_model.config import GQNConfig
from world_model.data import SceneBuffer
from world_model.distributed import DistributedTrainer, scenes_per_rank, sum_over_ranks, torchrun_group
from world_model.evaluation import evaluate
from world_model.store import SceneStore
from world_model.trainer import Trainer

EVAL_SEED_BASE = 2_000_000_000
WARMUP_SHARE = 0.5
"""Most of the time left of a ``minutes`` budget that the warm-up may take; it is cut short (and says so) beyond."""


@dataclass
class RunConfig:
    """One world-model training run: what :func:`train` does, as ``gqn-gym train`` flags set it.

    Give ``minutes``, ``steps`` or both; the run stops at whichever comes first.
    """

    preset: str = "cpu"
    """Model preset of a new run (``tiny``, ``cpu``, ``paper``); a resumed run keeps its checkpoint's config."""
    anneal_steps: int | None = None
    """Anneal sigma over this many steps and the learning rate over twice as many (default: the config's)."""
    overrides: list[str] = field(default_factory=list)
    """``FIELD=VALUE`` changes to the model config (``--set``); a resumed run may change schedules only."""
    minutes: float | None = None
    """Wall-clock budget from the moment the model is built and the stores are loaded: making the env,
    the warm-up and collection included."""
    steps: int | None = None
    """Stop when the trainer reaches this many gradient steps (a resumed run's earlier steps included)."""
    checkpoint: str | None = "runs/gqn/checkpoint.pt"
    """Checkpoint file, written atomically by rank 0 during and after training; ``None``: none."""
    resume: bool = False
    """Continue from ``checkpoint`` if it exists: weights, optimizer, generators, step, next scene."""
    checkpoint_every_s: float = 600.0
    """Seconds between checkpoints (0: after every step); one more is written at the end."""
    stores: list[str] = field(default_factory=list)
    """Scene stores whose frames the buffer starts from (under torchrun each rank loads its shard)."""
    online: bool = True
    """Walk new scenes while training; ``False`` trains on ``stores`` only."""
    env_id: str = "GQNMazeScene-S3-v0"
    """Scene env the walker collects from (and held-out scenes come from)."""
    policy: str = "random"
    """Collection policy: ``random`` or ``explorer``."""
    warmup_scenes: int = 400
    """Scenes walked before the first step of an online run without stores; cut short, with a message,
    when it would take more than half of the ``minutes`` left when it starts."""
    steps_per_scene: int = 216
    """Env steps walked per scene (one episode, cut short)."""
    frame_skip: int = 4
    """Keep every ``frame_skip``-th frame of a walk."""
    collect_every: int = 4
    """Gradient steps between two newly collected scenes (per process: ``collect_every * W`` under torchrun)."""
    max_scenes: int = 4000
    """Scenes kept in memory, over all ranks (oldest evicted)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments of the scene env."""
    device: str = "cpu"
    """Torch device; under torchrun with CUDA each rank takes ``cuda:LOCAL_RANK``."""
    backend: str | None = None
    """torch.distributed backend under torchrun: ``gloo``, ``nccl``, or ``None`` for nccl with CUDA, else gloo."""
    threads: int | None = None
    """Torch threads per process (default: see :func:`train_threads`)."""
    seed: int = 0
    """Selects the training scene seeds and the walker's randomness (the model's is ``GQNConfig.seed``)."""
    log_dir: str | None = None
    """TensorBoard directory (rank 0)."""
    progress: bool = True
    """Progress bars on stderr (rank 0); without them each checkpoint prints a line."""
    eval_scenes: int = 0
    """Held-out scenes evaluated at the end (rank 0, :class:`Evaluate`); 0: no evaluation."""
    eval_context: int = 16
    """Context views per held-out scene."""

    def __post_init__(self) -> None:
        """Validate on construction; errors name the value received."""
        if self.minutes is None and self.steps is None:
            raise ValueError("give minutes, steps or both")
        if self.minutes is not None and not self.minutes > 0:
            raise ValueError(f"minutes must be > 0, got {self.minutes}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not self.online and not self.stores:
            raise ValueError("an offline run trains on stores: give at least one (--store)")
        for name, low in [("warmup_scenes", 0), ("steps_per_scene", 1), ("frame_skip", 1), ("collect_every", 1)]:
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if self.max_scenes < 1:
            raise ValueError(f"max_scenes must be >= 1, got {self.max_scenes}")
        if self.checkpoint_every_s < 0:
            raise ValueError(f"checkpoint_every_s must be >= 0, got {self.checkpoint_every_s}")
        if self.eval_scenes and (self.eval_scenes < 2 or self.eval_context < 1):
            raise ValueError(
                f"eval_scenes must be 0 or >= 2 (a baseline borrows another scene) and eval_context >= 1, "
                f"got {self.eval_scenes} and {self.eval_context}"
            )


class TrainingRunError(RuntimeError):
    """A run that cannot start (bad settings, stores or checkpoint) or ended without a gradient step."""


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
    progress: bool = False,
) -> list[EvalScene]:
    """Held-out evaluation scenes (see the module docstring).

    Context views are ``num_context`` frames spread evenly over a ``steps``-step walk;
    queries are rendered at free poses drawn in the rooms the walk visited.
    ``progress`` shows a tqdm bar on stderr (about a second a scene on S3).
    """
    scene = env.unwrapped
    out = []
    indices: Any = range(num_scenes)
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc="held-out scenes", unit="scene")
    for i in indices:
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


def train_threads(requested: int | None, preset: str, world: int) -> int:
    """Torch threads for one training process.

    ``requested`` wins. Otherwise: 1 for the ``tiny`` preset, whose small matrix
    products lose more to thread handoffs than they gain (measured: 30 ms a step
    with one thread against 217 ms with two while another process was busy), and
    for several processes (each rank gets a core); the machine's cores for one
    process of a larger preset.

    Raises:
        ValueError: If ``requested`` is < 1.
    """
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads must be >= 1, got {requested}")
        return requested
    if preset == "tiny" or world > 1:
        return 1
    return max(1, os.cpu_count() or 1)


class Collect(Hook):
    """Walk new scenes into the buffer: a warm-up, then ``world`` scenes every ``collect_every * world`` steps.

    Under torchrun each rank walks its share: scene index ``i`` goes to rank
    ``i % W``, so the ratio of scenes to global steps is that of one process and
    the global scene counter (saved as ``extra["next_scene"]``) is equal on every
    rank. A resumed run continues from the saved counter, without repeats.

    Args:
        run: Collection settings (``env_id``, ``policy``, ``steps_per_scene``, ...).
        warmup_scenes: Scenes, over all ranks, the buffers should hold before the first step.
    """

    def __init__(self, run: RunConfig, warmup_scenes: int) -> None:
        self.run = run
        self.warmup_scenes = warmup_scenes
        self.env: gym.Env | None = None

    def on_start(self, loop: TrainingLoop) -> None:
        """Make the env and walker, then warm up within the budget."""
        import gqn_env  # noqa: F401  (registers the scene env ids)

        run = self.run
        self.env = gym.make(run.env_id, image_size=loop.config.image_size, **run.env_kwargs)
        self.policy = make_policy(
            run.policy, np.random.default_rng(run.seed if loop.world == 1 else [run.seed, loop.rank])
        )
        self.next_scene = int(loop.trainer.extra.get("next_scene", 0))  # the global scene counter
        self._warm_up(loop)

    def _collect(self, loop: TrainingLoop, count: int) -> None:
        """Collect scenes ``next_scene .. next_scene + count - 1`` of all ranks; this rank walks its share."""
        t0 = time.perf_counter()
        mine = [i for i in range(self.next_scene, self.next_scene + count) if i % loop.world == loop.rank]
        seeds = [training_seeds(self.run.seed, i, 1)[0] for i in mine]
        loop.frames_collected += collect(
            self.env,
            loop.buffer,
            seeds,
            self.run.steps_per_scene,
            self.policy,
            self.run.frame_skip,
            top_down=loop.config.top_down_fraction > 0,
        )
        self.next_scene += count
        loop.scenes_collected += count
        loop.trainer.extra["next_scene"] = self.next_scene  # saved with the next checkpoint
        loop.collect_seconds += time.perf_counter() - t0

    def _warm_up(self, loop: TrainingLoop) -> None:
        """Collect up to ``warmup_scenes`` (all ranks' buffers together), one scene per rank at a time.

        With a ``minutes`` budget the warm-up stops after :data:`WARMUP_SHARE` of the time
        left when it starts (all ranks at the same scene), so that training gets the rest.
        """
        target = max(self.warmup_scenes - loop.buffer.num_scenes * loop.world, 0)
        budget = loop.budget_s
        now = loop.elapsed()
        deadline = math.inf if budget is None else now + WARMUP_SHARE * max(budget - now, 0.0)
        bar = None
        if self.run.progress and loop.rank == 0 and target > 20:
            from tqdm.auto import tqdm

            bar = tqdm(total=target, desc="warm-up", unit="scene")
        done = 0
        while done < target:
            if done and loop.agree(loop.elapsed() >= deadline)[0]:
                loop.say(
                    f"warm-up cut to {done} of {target} scenes: it may take at most {WARMUP_SHARE:.0%} "
                    f"of what is left of the {self.run.minutes:g}-minute budget",
                    file=sys.stderr,
                )
                break
            count = min(loop.world, target - done)
            self._collect(loop, count)
            done += count
            if bar is not None:
                bar.update(count)
        if bar is not None:
            bar.close()

    def on_step(self, loop: TrainingLoop) -> None:
        """Collect ``world`` new scenes every ``collect_every * world`` steps."""
        if loop.steps % (self.run.collect_every * loop.world) == 0:
            self._collect(loop, loop.world)

    def close(self) -> None:
        """Close the env."""
        if self.env is not None:
            self.env.close()
            self.env = None


class Evaluate(Hook):
    """At the end, rank 0 measures held-out PSNR against the baselines into ``loop.summary["evaluation"]``.

    Args:
        run: Where the held-out scenes come from (``env_id``, ``env_kwargs``) and how many (``eval_scenes``,
            ``eval_context``).
    """

    def __init__(self, run: RunConfig) -> None:
        self.run = run

    def on_end(self, loop: TrainingLoop) -> None:
        """Build the held-out scenes and evaluate the model on them."""
        if loop.rank != 0:
            return
        import gqn_env  # noqa: F401  (registers the scene env ids)

        run = self.run
        env = gym.make(run.env_id, image_size=loop.config.image_size, **run.env_kwargs)
        try:
            scenes = make_eval_scenes(env, run.eval_scenes, num_context=run.eval_context, progress=run.progress)
        finally:
            env.close()
        scenes = [scene.as_dict() for scene in scenes]
        loop.summary["evaluation"] = evaluate(loop.trainer.model, scenes, mean_image=loop.buffer.mean_image())


def model_config(run: RunConfig) -> tuple[GQNConfig, GQNConfig | None]:
    """The model config of a run and, when it resumes, its checkpoint's (``None`` for a new run).

    Raises:
        TrainingRunError: On a bad override, or one that changes a resumed run's architecture.
    """
    saved = None
    if run.resume and run.checkpoint and Path(run.checkpoint).exists():
        data = load_checkpoint(run.checkpoint)
        saved = GQNConfig.from_dict(data["config"])
    try:
        config = saved or GQNConfig.preset(run.preset)
    except ValueError as e:
        raise TrainingRunError(str(e)) from None
    try:
        if run.anneal_steps:
            config = config.with_anneal_steps(run.anneal_steps)
        config = config.with_overrides(run.overrides)
    except ValueError as e:
        raise TrainingRunError(f"--set: {e}") from None
    if saved is not None:
        try:
            check_compatible(data, config, run.checkpoint)
        except CheckpointError as e:
            raise TrainingRunError(f"--set: a resumed run keeps its checkpoint's architecture; {e}") from None
    return config, saved


def _load_buffer(run: RunConfig, config: GQNConfig, rank: int, world: int) -> SceneBuffer:
    """This rank's buffer: empty, or its shard of the stores."""
    max_scenes = scenes_per_rank(run.max_scenes, world)
    if not run.stores:
        return SceneBuffer(image_size=config.image_size, max_scenes=max_scenes, seed=rank)
    try:
        stores = [SceneStore(path) for path in run.stores]
        buffer = SceneBuffer(stores[0].image_size, stores[0].viewpoint_dim, max_scenes=max_scenes, seed=rank)
        for store in stores:  # each rank its scenes; a store unlike the first raises a clear ValueError
            store.load_into(buffer, shard=(rank, world) if world > 1 else None)
    except (OSError, ValueError) as e:
        raise TrainingRunError(str(e)) from None
    if buffer.image_size != config.image_size:
        raise TrainingRunError(
            f"{run.stores[0]} holds {buffer.image_size}px frames; the model takes {config.image_size}px "
            f"(a new run can take --set image_size={buffer.image_size})"
        )
    return buffer


def train(run: RunConfig, hooks: Sequence[Hook] = ()) -> TrainingLoop:
    """Train a world model as ``run`` says; return the loop's final state (``.summary``, ``.trainer``, ...).

    Under torchrun (``WORLD_SIZE`` > 1) every rank calls this: the process group
    lives for the call, each rank trains on its shard of the data and the ranks
    agree at every step on when to stop and save. ``hooks`` run after the built-in
    ones (:class:`Collect`, :class:`Checkpoint`, :class:`Progress`, :class:`Evaluate`,
    as ``run`` asks for them) at each event.

    Raises:
        TrainingRunError: If the run cannot start, or if it ends without a gradient
            step (e.g. a budget spent before the first one); no checkpoint is written then.
    """
    with torchrun_group(run.backend) as (rank, world, group_device):
        try:
            torch.set_num_threads(train_threads(run.threads, run.preset, world))
        except ValueError as e:
            raise TrainingRunError(str(e)) from None
        device = run.device if group_device is None else group_device
        config, saved = model_config(run)
        buffer = _load_buffer(run, config, rank, world)
        trainer_cls = DistributedTrainer if world > 1 else Trainer
        if saved is not None:
            trainer = trainer_cls.load(run.checkpoint, buffer, device=device, log_dir=run.log_dir, config=config)
        else:
            trainer = trainer_cls(config, buffer, device=device, log_dir=run.log_dir)
        budget_s = None if run.minutes is None else 60.0 * run.minutes
        start = time.perf_counter()  # the budget counts from here: the hooks' work (the warm-up) included
        loop = TrainingLoop(trainer, buffer, rank, world, start, budget_s, run.steps)
        if saved is not None:
            loop.say(f"resuming from {run.checkpoint} at step {trainer.step_count}")
            if config != saved:
                loop.say(f"with changed settings {config.changes_from(saved)}")
        if world > 1:
            loop.say(
                f"world size {world}, backend {dist.get_backend()}, global batch {config.batch_size}, "
                f"step {trainer.step_count} -> {run.steps if run.steps else f'{run.minutes:g} min'}; "
                f"rank 0 holds {len(buffer)} frames of {buffer.num_scenes} scenes"
            )
        built: list[Hook] = []
        if run.online:
            built.append(Collect(run, warmup_scenes=0 if run.stores else run.warmup_scenes))
        if run.checkpoint:
            built.append(Checkpoint(run.checkpoint, run.checkpoint_every_s, verbose=not run.progress))
        if run.progress:
            built.append(Progress())
        if run.eval_scenes:
            built.append(Evaluate(run))
        all_hooks = [*built, *hooks]
        try:
            for hook in all_hooks:
                hook.on_start(loop)
            while not loop.out_of_budget():
                loop.stats = trainer.step()
                loop.steps += 1
                for hook in all_hooks:
                    hook.on_step(loop)
            if loop.steps == 0:
                raise TrainingRunError(_no_step_reason(run, loop))
            seconds = loop.elapsed()  # the end hooks (final checkpoint, evaluation) are not training time
            frames = loop.frames_collected
            if world > 1:
                frames = int(sum_over_ranks(frames, device=trainer.device))
            loop.summary = {
                "steps": loop.steps,
                "total_steps": trainer.step_count,
                "scenes_collected": loop.scenes_collected,
                "next_scene": int(trainer.extra.get("next_scene", 0)),
                "frames_collected": frames,
                "seconds": seconds,
                "collect_seconds": loop.collect_seconds,
                "train_seconds": seconds - loop.collect_seconds,
                "last": loop.stats,
            }
            for hook in all_hooks:
                hook.on_end(loop)
        finally:
            for hook in all_hooks:
                hook.close()
    return loop


def _no_step_reason(run: RunConfig, loop: TrainingLoop) -> str:
    """Why a run ended before its first gradient step, and what to change."""
    if run.steps is not None and loop.trainer.step_count >= run.steps:
        return (
            f"nothing to train: {run.checkpoint} is already at step {loop.trainer.step_count} and --steps is "
            f"{run.steps}; the checkpoint is left as it was"
        )
    return (
        f"no gradient step within the {run.minutes:g}-minute budget: {loop.elapsed():.0f} s went to making the "
        f"env and collecting {loop.scenes_collected} scenes; give more minutes or fewer "
        f"--warmup-scenes. No checkpoint was written"
    )

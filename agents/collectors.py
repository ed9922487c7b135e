"""Collectors: agents that walk through scenes and feed frames to the world model.

A *frame* is ``(scene_id, image, viewpoint)``. Collectors hand frames to any
``sink`` with ``add_batch(scene_ids, images, viewpoints)``: a
:class:`world_model.data.SceneBuffer` (in memory), a
:class:`world_model.store.StoreWriter` (to disk), or both through :class:`Tee`.

Scene ids are unique per episode: ``scene_id = seed`` of the episode for
single-env collection, so a frame can be traced back to the scene that made it
and held-out seeds stay out of training.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

TURN_LEFT, TURN_RIGHT, FORWARD = 0, 1, 2


class FrameSink(Protocol):
    """Anything that takes batches of frames."""

    def add_batch(self, scene_ids: Any, images: Any, viewpoints: Any) -> None:
        """Add N frames: ids ``(N,)``, images ``(N, H, W, 3)`` uint8, viewpoints ``(N, D)``."""


class Tee:
    """Send every batch to several sinks."""

    def __init__(self, *sinks: FrameSink) -> None:
        self.sinks = sinks

    def add_batch(self, scene_ids: Any, images: Any, viewpoints: Any) -> None:
        """Forward the batch to each sink."""
        for sink in self.sinks:
            sink.add_batch(scene_ids, images, viewpoints)


class RandomWalker:
    """Random actions, biased towards moving forward so the agent leaves its room.

    Args:
        rng: Seeded generator.
        action_probs: Probabilities of (turn left, turn right, forward).
    """

    def __init__(self, rng: np.random.Generator, action_probs: Sequence[float] = (0.25, 0.25, 0.5)) -> None:
        probs = np.asarray(action_probs, dtype=np.float64)
        if probs.shape != (3,) or np.any(probs < 0) or not math.isclose(probs.sum(), 1.0):
            raise ValueError(f"action_probs must be 3 non-negative numbers summing to 1, got {action_probs!r}")
        self.rng = rng
        self.probs = probs

    def reset(self) -> None:
        """Start a new episode (the random walker keeps no state)."""

    def act(self, info: dict) -> int:
        """Draw an action."""
        return int(self.rng.choice(3, p=self.probs))


class Explorer:
    """Prefers floor it has not been on: a count-based explorer using only its own poses.

    It keeps visit counts on a grid of ``cell`` metres. Walking forward, it
    re-plans every ``replan_every`` steps or when a forward step did not move it
    (a wall): it scores 8 headings by the visit count of the cell ``lookahead``
    metres away in that direction (plus noise to break ties) and turns towards
    the least visited one, then walks. It needs no map and no privileged state.

    Args:
        rng: Seeded generator.
        cell: Grid cell size in metres.
        lookahead: Distance of the scored cell in metres.
        replan_every: Forward steps between re-plans.
        turn_step_deg: The env's turn step (MiniWorld: 15 degrees).
    """

    def __init__(
        self,
        rng: np.random.Generator,
        cell: float = 0.75,
        lookahead: float = 1.5,
        replan_every: int = 12,
        turn_step_deg: float = 15.0,
    ) -> None:
        self.rng = rng
        self.cell = cell
        self.lookahead = lookahead
        self.replan_every = replan_every
        self.turn_step = math.radians(turn_step_deg)
        self.reset()

    def reset(self) -> None:
        """Forget the visit counts: a new scene."""
        self.counts: dict[tuple[int, int], int] = {}
        self.turns_left = 0
        self.turn_action = TURN_LEFT
        self.since_plan = 0
        self.last_pose: np.ndarray | None = None
        self.last_action: int | None = None

    def _key(self, x: float, z: float) -> tuple[int, int]:
        return (int(math.floor(x / self.cell)), int(math.floor(z / self.cell)))

    def _plan(self, x: float, z: float, yaw: float, blocked: bool) -> None:
        headings = yaw + np.arange(8) * (math.pi / 4)
        scores = np.array(
            [
                self.counts.get(self._key(x + self.lookahead * math.cos(h), z - self.lookahead * math.sin(h)), 0)
                for h in headings
            ],
            dtype=np.float64,
        )
        if blocked:
            scores[0] = np.inf  # straight ahead is a wall
        scores += self.rng.uniform(0, 0.5, size=8)
        best = int(np.argmin(scores))
        delta = (best * math.pi / 4 + math.pi) % (2 * math.pi) - math.pi  # in [-pi, pi)
        self.turns_left = int(round(abs(delta) / self.turn_step))
        self.turn_action = TURN_LEFT if delta > 0 else TURN_RIGHT
        self.since_plan = 0

    def act(self, info: dict) -> int:
        """Choose the next action from ``info["pose"]`` (``[x, z, yaw, pitch]``)."""
        pose = np.asarray(info["pose"], dtype=np.float64)
        x, z, yaw = float(pose[0]), float(pose[1]), float(pose[2])
        key = self._key(x, z)
        self.counts[key] = self.counts.get(key, 0) + 1
        blocked = (
            self.last_action == FORWARD and self.last_pose is not None and np.allclose(self.last_pose[:2], pose[:2])
        )
        self.last_pose = pose
        if self.turns_left == 0 and (blocked or self.since_plan >= self.replan_every):
            self._plan(x, z, yaw, blocked)
        if self.turns_left > 0:
            self.turns_left -= 1
            action = self.turn_action
        else:
            self.since_plan += 1
            action = FORWARD
        self.last_action = action
        return action


POLICIES = {"random": RandomWalker, "explorer": Explorer}


def make_policy(name: str, rng: np.random.Generator) -> RandomWalker | Explorer:
    """Build a collection policy by name (``random`` or ``explorer``)."""
    if name not in POLICIES:
        raise ValueError(f"Unknown policy {name!r}; choose from {sorted(POLICIES)}")
    return POLICIES[name](rng)


@dataclass
class Episode:
    """Frames of one scene (one episode), as collected."""

    scene_id: int
    images: np.ndarray  # (T, H, W, 3) uint8
    viewpoints: np.ndarray  # (T, D) float32
    poses: np.ndarray  # (T, 4) float64: x, z, yaw, pitch


def walk(
    env: gym.Env,
    seed: int,
    steps: int,
    policy: RandomWalker | Explorer,
    frame_skip: int = 1,
) -> Episode:
    """Run one episode of at most ``steps`` steps from ``reset(seed=seed)``; keep every ``frame_skip``-th frame.

    The episode ends early if the env terminates or truncates. The scene id is the seed.
    """
    if steps < 1 or frame_skip < 1:
        raise ValueError(f"steps and frame_skip must be >= 1, got {steps}, {frame_skip}")
    obs, info = env.reset(seed=seed)
    policy.reset()
    images, viewpoints, poses = [obs["image"]], [obs["viewpoint"]], [info["pose"]]
    for t in range(1, steps):
        obs, _, terminated, truncated, info = env.step(policy.act(info))
        if t % frame_skip == 0:
            images.append(obs["image"])
            viewpoints.append(obs["viewpoint"])
            poses.append(info["pose"])
        if terminated or truncated:
            break
    return Episode(seed, np.stack(images), np.stack(viewpoints).astype(np.float32), np.stack(poses))


def collect(
    env: gym.Env,
    sink: FrameSink,
    seeds: Sequence[int] | Iterator[int],
    steps_per_scene: int,
    policy: RandomWalker | Explorer,
    frame_skip: int = 1,
    progress: bool = False,
    top_down: bool = False,
) -> int:
    """Walk one episode per seed and send its frames to ``sink``; return the number of frames.

    With ``top_down``, each scene's frames end with its top-down view
    (``render_top_down``, viewpoint :data:`~world_model.frames.TOP_DOWN_VIEWPOINT`),
    the target of the world model's top-down queries; it is counted in the return value.
    """
    seeds = list(seeds)
    iterator: Any = seeds
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(seeds, desc="collect", unit="scene")
    total = 0
    for seed in iterator:
        ep = walk(env, int(seed), steps_per_scene, policy, frame_skip)
        images, viewpoints = ep.images, ep.viewpoints
        if top_down:
            from world_model.frames import TOP_DOWN_VIEWPOINT  # here: the module stays light (no torch) to import

            above = env.unwrapped.render_top_down(images.shape[1:3])
            images = np.concatenate([images, above[None]])
            viewpoints = np.concatenate([viewpoints, TOP_DOWN_VIEWPOINT[None]])
        sink.add_batch(np.full(len(images), ep.scene_id, dtype=np.int64), images, viewpoints)
        total += len(images)
    return total


def async_scene_envs(env_id: str, num_envs: int, **env_kwargs: Any) -> gym.vector.AsyncVectorEnv:
    """``num_envs`` scene envs in worker processes (forkserver: MiniWorld's GL context does not survive fork).

    The ``gqn_env:`` id prefix makes each fresh worker import gqn_env (registering the ids).
    """
    fns = [lambda: gym.make(f"gqn_env:{env_id}", **env_kwargs) for _ in range(num_envs)]
    return gym.vector.AsyncVectorEnv(fns, context="forkserver")


def collect_vector(
    envs: gym.vector.VectorEnv,
    sink: FrameSink,
    num_steps: int,
    policies: Sequence[RandomWalker | Explorer],
    seed: int,
    first_scene_id: int = 0,
    progress: bool = False,
) -> int:
    """Step a vector env ``num_steps`` times, sending all sub-envs' frames to ``sink`` in one batch per step.

    Each sub-env episode gets its own scene id (``first_scene_id`` counting up).
    The vector env must use Gymnasium's default NEXT_STEP autoreset: the step
    after an episode ends is a reset, whose frame starts the next scene.

    Returns:
        The number of frames sent.
    """
    n = envs.num_envs
    if len(policies) != n:
        raise ValueError(f"Need one policy per sub-env ({n}), got {len(policies)}")
    obs, infos = envs.reset(seed=seed)
    scene_ids = np.arange(first_scene_id, first_scene_id + n, dtype=np.int64)
    next_id = first_scene_id + n
    sink.add_batch(scene_ids.copy(), obs["image"], obs["viewpoint"])
    for p in policies:
        p.reset()
    done = np.zeros(n, dtype=bool)
    iterator: Any = range(num_steps)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="collect", unit="step")
    total = n
    for _ in iterator:
        actions = np.array([policies[i].act({"pose": infos["pose"][i]}) for i in range(n)])
        obs, _, terminated, truncated, infos = envs.step(actions)
        for i in np.flatnonzero(done):  # this step was an autoreset: a new scene
            scene_ids[i] = next_id
            next_id += 1
            policies[i].reset()
        sink.add_batch(scene_ids.copy(), obs["image"], obs["viewpoint"])
        total += n
        done = np.logical_or(terminated, truncated)
    return total

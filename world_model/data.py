"""Scene stream for GQN training: frames grouped by scene, sampled as GQN batches.

A *frame* (defined in :mod:`world_model.frames`) is ``(scene_id, image, viewpoint)``;
a scene is one episode of one env: its frames show the same 3D maze from different poses.

:class:`SceneBuffer` groups frames by scene and samples GQN batches (K context
views plus one query view of the same scene). A scene's top-down frame (the maze
from above, :func:`world_model.frames.is_top_down`) is kept apart: it is never
context, and it is the query of a ``top_down_fraction`` of the batch items. The
on-disk store that persists frames is in :mod:`world_model.store`.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import numpy as np

from world_model.config import CONTEXT_SAMPLINGS, CONTEXT_SELECTIONS, check_choice
from world_model.frames import TOP_DOWN_VIEWPOINT, check_frame, check_frames, is_top_down
from world_model.store import SceneStore

__all__ = ["SceneBuffer", "check_frame", "check_frames"]


class _Scene:
    """Frames of one scene in preallocated arrays that grow by doubling up to a cap."""

    __slots__ = ("images", "viewpoints", "size", "seen", "top_down")

    def __init__(self, image_size: int, viewpoint_dim: int, capacity: int) -> None:
        self.images = np.empty((capacity, image_size, image_size, 3), dtype=np.uint8)  # (cap, H, W, 3)
        self.viewpoints = np.empty((capacity, viewpoint_dim), dtype=np.float32)  # (cap, D)
        self.size = 0  # first-person frames stored
        self.seen = 0  # first-person frames ever offered to this scene
        self.top_down: tuple[np.ndarray, np.ndarray] | None = None  # the latest top-down (image, viewpoint)

    def insert(self, image: np.ndarray, viewpoint: np.ndarray, max_frames: int, rng: np.random.Generator) -> int:
        """Insert by reservoir sampling (Algorithm R); return the change in stored frames (0 or 1)."""
        self.seen += 1
        if self.size < max_frames:
            if self.size == len(self.images):
                capacity = min(2 * len(self.images), max_frames)
                self.images = np.concatenate([self.images, np.empty_like(self.images[: capacity - self.size])])
                self.viewpoints = np.concatenate(
                    [self.viewpoints, np.empty_like(self.viewpoints[: capacity - self.size])]
                )
            self.images[self.size], self.viewpoints[self.size] = image, viewpoint
            self.size += 1
            return 1
        slot = int(rng.integers(0, self.seen))  # uniform over the `seen` frames offered so far
        if slot < max_frames:
            self.images[slot], self.viewpoints[slot] = image, viewpoint
        return 0


def draw_num_context(rng: np.random.Generator, lo: int, hi: int, sampling: str = "uniform") -> int:
    """A number of context views K in ``[lo, hi]``: uniform, or with log K uniform (``"log_uniform"``).

    Log-uniform: K is the floor of ``exp(u)``, u uniform in ``[log lo, log(hi + 1))``, so
    every K in range can come up and each doubling of K is about as likely as the last.
    """
    check_choice("context_sampling", sampling, CONTEXT_SAMPLINGS)
    if sampling == "log_uniform":
        return min(int(np.exp(rng.uniform(np.log(lo), np.log(hi + 1)))), hi)
    return int(rng.integers(lo, hi + 1))


def _frame_indices(rng: np.random.Generator, size: int, k: int, selection: str) -> np.ndarray:
    """K context frame indices of a scene holding ``size`` frames, then the query's: ``(k + 1,)``.

    ``"random"``: K + 1 distinct frames. ``"window"``: frames ``start .. start + K - 1`` in
    the order they were added, the query any one of the other ``size - K``.
    """
    if selection == "random":
        return rng.choice(size, size=k + 1, replace=False)
    start = int(rng.integers(0, size - k + 1))
    query = int(rng.integers(0, size - k))
    query += k if query >= start else 0  # skip over the window
    return np.append(np.arange(start, start + k), query)


class SceneBuffer:
    """Bounded in-memory store of frames grouped by scene, sampling GQN batches.

    Scenes are kept in order of first appearance; when a new scene would exceed
    ``max_scenes`` the oldest is evicted (an evicted id that shows up again starts a
    new scene). A scene offered more than ``max_frames_per_scene`` frames keeps a
    uniform random subset of them (reservoir sampling driven by the buffer's own
    generator seeded with ``seed``). All methods are thread-safe: one thread may add
    while another samples, and a sample never sees a half-inserted frame.

    Args:
        image_size: Image height and width H == W.
        viewpoint_dim: Viewpoint length D.
        max_scenes: Scenes kept in memory.
        max_frames_per_scene: Frames kept per scene (reservoir size).
        min_frames_to_sample: Frames a scene needs before :meth:`sample` may pick it.
        context_range: Default inclusive range of the number K of context views.
        seed: Seed of the generator used for reservoir sampling.
    """

    def __init__(
        self,
        image_size: int,
        viewpoint_dim: int = 7,
        max_scenes: int = 1000,
        max_frames_per_scene: int = 512,
        min_frames_to_sample: int = 2,
        context_range: tuple[int, int] = (1, 15),
        seed: int | None = 0,
    ) -> None:
        for name, value, low in [
            ("image_size", image_size, 1),
            ("viewpoint_dim", viewpoint_dim, 1),
            ("max_scenes", max_scenes, 1),
            ("max_frames_per_scene", max_frames_per_scene, 2),
            ("min_frames_to_sample", min_frames_to_sample, 2),
        ]:
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if min_frames_to_sample > max_frames_per_scene:
            raise ValueError(
                f"min_frames_to_sample ({min_frames_to_sample}) exceeds max_frames_per_scene ({max_frames_per_scene})"
            )
        self.image_size = image_size
        self.viewpoint_dim = viewpoint_dim
        self.max_scenes = max_scenes
        self.max_frames_per_scene = max_frames_per_scene
        self.min_frames_to_sample = min_frames_to_sample
        self.context_range = self._context_bounds(context_range)
        self._rng = np.random.default_rng(seed)
        self._scenes: OrderedDict[int, _Scene] = OrderedDict()
        self._num_frames = 0
        self._total_added = 0
        self._first_person_added = 0
        self._pixel_sum = np.zeros((image_size, image_size, 3), dtype=np.float64)  # (H, W, 3), exact for < 2**45
        self._lock = threading.Lock()

    def _context_bounds(self, num_context: int | tuple[int, int] | None) -> tuple[int, int]:
        """Resolve ``num_context`` to an inclusive range ``(lo, hi)`` with 1 <= lo <= hi."""
        if num_context is None:
            return self.context_range
        lo, hi = (num_context, num_context) if isinstance(num_context, int | np.integer) else tuple(num_context)
        if not 1 <= lo <= hi or lo + 1 > self.max_frames_per_scene:
            raise ValueError(
                f"num_context must be K or (lo, hi) with 1 <= lo <= hi and lo < max_frames_per_scene "
                f"({self.max_frames_per_scene}), got {num_context!r}"
            )
        return int(lo), int(hi)

    def add(self, scene_id: int, image: np.ndarray, viewpoint: np.ndarray) -> None:
        """Add one frame.

        Args:
            scene_id: Id of the scene (episode) the frame belongs to.
            image: ``uint8`` array ``(H, W, 3)``.
            viewpoint: Finite real array ``(D,)``, stored as ``float32``.

        Raises:
            ValueError: If the frame is malformed; the buffer is then unchanged.
        """
        self._insert(*check_frame(scene_id, image, viewpoint, self.image_size, self.viewpoint_dim))

    def add_batch(self, scene_ids: np.ndarray, images: np.ndarray, viewpoints: np.ndarray) -> None:
        """Add N frames at once (e.g. one step of N vector envs); same result as N :meth:`add` calls.

        Args:
            scene_ids: Integer array ``(N,)``.
            images: ``uint8`` array ``(N, H, W, 3)``.
            viewpoints: Finite real array ``(N, D)``.

        Raises:
            ValueError: If any frame is malformed; nothing is inserted then.
        """
        self._insert(*check_frames(scene_ids, images, viewpoints, self.image_size, self.viewpoint_dim))

    def _insert(self, ids: np.ndarray, images: np.ndarray, viewpoints: np.ndarray) -> None:
        top = is_top_down(viewpoints) if self.viewpoint_dim == len(TOP_DOWN_VIEWPOINT) else np.zeros(len(ids), bool)
        with self._lock:
            for sid, image, viewpoint, top_down in zip(ids.tolist(), images, viewpoints, top, strict=True):
                scene = self._scenes.get(sid)
                if scene is None:
                    if len(self._scenes) >= self.max_scenes:
                        _, oldest = self._scenes.popitem(last=False)
                        self._num_frames -= oldest.size + (oldest.top_down is not None)
                    scene = _Scene(self.image_size, self.viewpoint_dim, min(16, self.max_frames_per_scene))
                    self._scenes[sid] = scene
                if top_down:
                    self._num_frames += scene.top_down is None
                    scene.top_down = (image.copy(), viewpoint.copy())
                else:
                    self._num_frames += scene.insert(image, viewpoint, self.max_frames_per_scene, self._rng)
            self._pixel_sum += images[~top].sum(axis=0, dtype=np.float64)
            self._first_person_added += int((~top).sum())
            self._total_added += len(ids)

    def sample(
        self,
        batch_size: int,
        rng: np.random.Generator,
        num_context: int | tuple[int, int] | None = None,
        top_down_fraction: float = 0.0,
        context_sampling: str = "uniform",
        context_selection: str = "random",
    ) -> dict[str, np.ndarray]:
        """Sample a batch of K context views and one query view per scene.

        Scenes are drawn uniformly (with replacement) among eligible scenes: those with
        at least ``max(min_frames_to_sample, lo + 1)`` first-person frames. K is then
        drawn once for the batch in ``[lo, min(hi, n_min - 1)]`` (:func:`draw_num_context`), where
        ``n_min`` is the smallest frame count among the drawn scenes; each item gets
        K + 1 distinct first-person frames of its scene, the first K as context and
        the last as query (with ``context_selection="window"``, K frames in a row, in the
        order they were added, and the query another). With ``top_down_fraction`` = p > 0, each item whose scene
        has a top-down frame takes it as its query instead, with probability p.

        Args:
            batch_size: Number B of batch items.
            rng: The only source of randomness: same seed and same frames give the same batch.
            num_context: K, or an inclusive range ``(lo, hi)``; ``None`` uses ``context_range``.
            top_down_fraction: Probability p in [0, 1] of a top-down query (0 draws nothing extra from ``rng``).
            context_sampling: ``"uniform"`` K, or ``"log_uniform"``: log K uniform over the same range.
            context_selection: ``"random"`` frames, or a ``"window"`` of consecutive ones: the
                first K frames of an agent's walk look like the latter (frames stay in the order
                they were added while a scene holds at most ``max_frames_per_scene``).

        Returns:
            ``context_images`` (B, K, H, W, 3) uint8, ``context_viewpoints`` (B, K, D)
            float32, ``query_images`` (B, H, W, 3) uint8, ``query_viewpoints`` (B, D)
            float32 and ``scene_ids`` (B,) int64.

        Raises:
            ValueError: If no scene is eligible yet, or on a bad argument.
        """
        if not isinstance(batch_size, int | np.integer) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        if not 0.0 <= top_down_fraction <= 1.0:
            raise ValueError(f"top_down_fraction must be in [0, 1], got {top_down_fraction!r}")
        check_choice("context_sampling", context_sampling, CONTEXT_SAMPLINGS)  # before any draw: rng stays as it was
        check_choice("context_selection", context_selection, CONTEXT_SELECTIONS)
        lo, hi = self._context_bounds(num_context)
        needed = max(self.min_frames_to_sample, lo + 1)
        with self._lock:
            eligible = [(sid, s) for sid, s in self._scenes.items() if s.size >= needed]
            if not eligible:
                raise ValueError(
                    f"no scene has the {needed} frames needed to sample (K >= {lo}); "
                    f"the buffer holds {self._num_frames} frames in {len(self._scenes)} scenes"
                )
            chosen = [eligible[i] for i in rng.integers(0, len(eligible), size=batch_size)]
            k = draw_num_context(rng, lo, min(hi, min(s.size for _, s in chosen) - 1), context_sampling)
            s, d = self.image_size, self.viewpoint_dim
            batch = {
                "context_images": np.empty((batch_size, k, s, s, 3), dtype=np.uint8),  # (B, K, H, W, 3)
                "context_viewpoints": np.empty((batch_size, k, d), dtype=np.float32),  # (B, K, D)
                "query_images": np.empty((batch_size, s, s, 3), dtype=np.uint8),  # (B, H, W, 3)
                "query_viewpoints": np.empty((batch_size, d), dtype=np.float32),  # (B, D)
                "scene_ids": np.array([sid for sid, _ in chosen], dtype=np.int64),  # (B,)
            }
            top = rng.random(batch_size) < top_down_fraction if top_down_fraction > 0 else np.zeros(batch_size, bool)
            for b, (_, scene) in enumerate(chosen):
                idx = _frame_indices(rng, scene.size, k, context_selection)  # K context frames, then the query
                batch["context_images"][b], batch["query_images"][b] = scene.images[idx[:k]], scene.images[idx[k]]
                batch["context_viewpoints"][b] = scene.viewpoints[idx[:k]]
                batch["query_viewpoints"][b] = scene.viewpoints[idx[k]]
                if top[b] and scene.top_down is not None:
                    batch["query_images"][b], batch["query_viewpoints"][b] = scene.top_down
        return batch

    def __len__(self) -> int:
        """Number of frames currently stored."""
        with self._lock:
            return self._num_frames

    @property
    def num_scenes(self) -> int:
        """Number of scenes currently stored."""
        with self._lock:
            return len(self._scenes)

    @property
    def total_added(self) -> int:
        """Number of frames ever added, including evicted and reservoir-dropped ones."""
        with self._lock:
            return self._total_added

    def scene_ids(self) -> list[int]:
        """Ids of the stored scenes, oldest first."""
        with self._lock:
            return list(self._scenes)

    def get_scene(self, scene_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Return copies of a scene's first-person ``images (n, H, W, 3)`` and ``viewpoints (n, D)``.

        Raises:
            KeyError: If the scene is not stored.
        """
        with self._lock:
            if scene_id not in self._scenes:
                raise KeyError(f"scene {scene_id!r} is not in the buffer")
            scene = self._scenes[scene_id]
            return scene.images[: scene.size].copy(), scene.viewpoints[: scene.size].copy()

    def get_top_down(self, scene_id: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Return a copy of a scene's top-down ``(image (H, W, 3), viewpoint (D,))``, or None if it has none.

        Raises:
            KeyError: If the scene is not stored.
        """
        with self._lock:
            if scene_id not in self._scenes:
                raise KeyError(f"scene {scene_id!r} is not in the buffer")
            top_down = self._scenes[scene_id].top_down
            return None if top_down is None else (top_down[0].copy(), top_down[1].copy())

    def mean_image(self) -> np.ndarray:
        """Mean of all first-person frames ever added, ``float32 (H, W, 3)`` in [0, 1] (a baseline prediction).

        Raises:
            ValueError: If no first-person frame was added yet.
        """
        with self._lock:
            if self._first_person_added == 0:
                raise ValueError("mean_image of an empty buffer")
            return (self._pixel_sum / (255.0 * self._first_person_added)).astype(np.float32)

    def save_to(self, path: str | os.PathLike[str], compression_level: int = 6) -> int:
        """Append all stored frames to the store at ``path`` (created if missing), one record per scene.

        Returns:
            The number of frames written.
        """
        store = SceneStore(path, self.image_size, self.viewpoint_dim, compression_level=compression_level)
        written = 0
        for sid in self.scene_ids():
            try:
                images, viewpoints = self.get_scene(sid)
                top_down = self.get_top_down(sid)
            except KeyError:  # evicted meanwhile by another thread
                continue
            if top_down is not None:
                images, viewpoints = (
                    np.concatenate([images, top_down[0][None]]),
                    np.concatenate([viewpoints, top_down[1][None]]),
                )
            store.append(np.full(len(images), sid, dtype=np.int64), images, viewpoints)
            written += len(images)
        return written

    @classmethod
    def from_store(cls, path: str | os.PathLike[str], **kwargs: object) -> SceneBuffer:
        """Build a buffer from a store; ``kwargs`` go to the constructor (sizes default to the store's).

        Raises:
            ValueError: If ``image_size``/``viewpoint_dim`` are given and differ from the store's.
        """
        store = SceneStore(path)
        kwargs.setdefault("image_size", store.image_size)
        kwargs.setdefault("viewpoint_dim", store.viewpoint_dim)
        buffer = cls(**kwargs)  # type: ignore[arg-type]
        store.load_into(buffer)
        return buffer

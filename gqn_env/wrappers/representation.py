"""Expose a GQN scene representation as the observation.

The GQN's scene representation is a *sum* over views: ``r = sum_k f(x_k, v_k)``
(Eslami et al. 2018). So it can be updated one frame at a time: at ``reset`` the
running sum starts from the first frame, and every ``step`` adds the encoding of
the new frame. One encoder pass per step, never a re-encoding of the history.

:class:`RepresentationState` holds the running sums of N scenes (N = 1 for one
env, N = num_envs for a vector env) and encodes all new frames in one forward
pass. :class:`GQNRepresentation` wraps one env, :class:`GQNRepresentationVector`
a Gymnasium vector env (batched: one forward pass for all sub-envs per step).

Observation ``representation``: the flat running sum divided by the number of
frames seen (``scale="mean"``, default: bounded and stationary in scale, which
suits PPO) or the raw sum (``scale="sum"``, the paper's r). Observation ``view_encoding``:
the encoding of the current frame alone, ``f(x_t, v_t)``: what the agent sees now,
in the model's terms (free: it is the term just added to the sum). Observation
``patches`` (models with the ``patch`` representation network): the current
frame's per-patch features ``(c, g, g)``, the representation network's map
before it pools the frame into one vector; it keeps where in the view each
feature is (also free: computed on the way to ``view_encoding``). Observation ``recall``
(``patch`` models too): the episode's encoded views queried at the viewpoints
to the agent's left, behind it and to its right (its position, its heading
turned by :data:`RECALL_TURNS`): for each, the per-patch map of the frame whose
viewpoint is nearest that query, the same choice the generator's nearest-view
input makes. It is the agent's memory in the world model's terms: a goal seen
earlier while facing left of here shows up in the left map. Observation
``landmarks`` (``patch`` models too): for each of the map's ``c`` feature
channels, the strongest response seen so far in the episode and where it was
seen from, relative to the agent now (:data:`LANDMARK_FIELDS`): a memory of
where each feature was last at its peak. The goal box is the scene's only red
object, so a channel that responds to red remembers where the goal was seen,
however long ago: a ``(c, 7)`` array, one row per channel, for one numpy update per step.
Observation ``motion``: how the agent moved since the previous frame, in its own frame,
and whether the last move was blocked (:data:`MOTION_FIELDS`): what a stack of frames
shows a pixel agent, in four numbers. Observation ``map`` (models with a map head,
``ModelConfig.map_channels`` > 0): the episode's mean of the map head's channels,
the part of r trained to draw the maze from above and which ``representation``
leaves out: a vector, or for a ``grid`` map head an ``(M, s, s)`` map of the floor
(columns along +x, rows along +z).

Imagination renders from the sum, but the model was trained on sums of at most
``config.context_max`` views, and an episode holds hundreds of frames. So once
more than ``context_max`` frames have been seen, :meth:`RepresentationState.imagine`
renders from ``context_max`` times the mean encoding: the expected r of
``context_max`` frames drawn at random from the episode, inside the range the
model knows.

The state keeps each scene's frames of the episode at the model's image size
(3 KB a frame at 32x32; :class:`Episode`): :meth:`RepresentationState.imagine`
hands them to the model as the context (a model with ``config.view_channels > 0``
renders from the one nearest each imagined viewpoint, world_model/generator.py),
``recall`` searches their viewpoints, and :meth:`GQNRepresentation.refresh`
re-encodes them after a world-model update.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from gqn_env.envs.viewpoint import TOP_DOWN_VIEWPOINT, VIEWPOINT_DIM, Pose
from world_model.model import scale_to_context
from world_model.representation import NumpyPatchEncoder, PatchRepresentation

OBS_KEYS = (
    "representation",
    "view_encoding",
    "patches",
    "recall",
    "landmarks",
    "map",
    "motion",
    "viewpoint",
    "image",
)
#: Old names still accepted in ``obs_keys`` (observed under the old name, with a
#: ``DeprecationWarning``), to be removed in the next release.
DEPRECATED_OBS_KEYS = {"view": "view_encoding"}
#: Heading offsets of the ``recall`` queries (radians, counter-clockwise): left, behind, right.
RECALL_TURNS = (math.pi / 2, math.pi, -math.pi / 2)
#: Per channel of the ``landmarks`` observation: its peak response in the episode;
#: the agent's position when it was seen, forward and to the right of the agent now
#: (viewpoint units: the floor spans [-1, 1]); the cosine and sine of the heading
#: then relative to the heading now; the column and row of the patch it was in
#: (-0.5 left or top, 0.5 right or bottom).
LANDMARK_FIELDS = ("peak", "forward", "right", "cos_turn", "sin_turn", "column", "row")
#: The ``motion`` observation: how the agent moved from the episode's previous frame to
#: this one, in the previous frame's heading: forward and right (viewpoint units), the
#: sine of the turn (positive: left), and ``still``, 1 when neither the position nor the
#: heading changed (a move that something blocked), else 0. All zeros on an episode's
#: first frame.
MOTION_FIELDS = ("forward", "right", "sin_turn", "still")
#: Keys that need the ``patch`` representation network's per-patch map.
PATCH_KEYS = ("patches", "recall", "landmarks")
SCALES = ("mean", "sum")


def _to_model_size(images: np.ndarray, size: int) -> np.ndarray:
    """Block-average ``(N, H, W, 3)`` uint8 images down to ``size`` (H a multiple of size)."""
    n, h, w, c = images.shape
    if (h, w) == (size, size):
        return images
    fh, fw = h // size, w // size
    # (N, size, fh, size, fw, 3) -> mean over the blocks -> (N, size, size, 3)
    blocks = images.reshape(n, size, fh, size, fw, c).astype(np.float32)
    return np.round(blocks.mean(axis=(2, 4))).astype(np.uint8)


def to_agent_frame(dx: Any, dz: Any, cos: Any, sin: Any) -> tuple[Any, Any]:
    """A floor offset ``(dx, dz)`` as ``(forward, right)`` of an agent heading ``(cos, sin)`` of its yaw.

    Forward is ``(cos, -sin)`` on the (x, z) floor, right is ``(sin, cos)`` (yaw turns
    left; gqn_env/envs/viewpoint.py). Scalars or numpy arrays alike.
    """
    return dx * cos - dz * sin, dx * sin + dz * cos


def motion(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    """The ``motion`` fields (:data:`MOTION_FIELDS`) between two ``(D,)`` viewpoints, float32 ``(4,)``."""
    cos, sin = previous[3], previous[4]
    forward, right = to_agent_frame(current[0] - previous[0], current[2] - previous[2], cos, sin)
    sin_turn = current[4] * cos - current[3] * sin  # sin(yaw now - yaw then)
    still = float(np.array_equal(previous, current))
    return np.array([forward, right, sin_turn, still], dtype=np.float32)


def check_image_size(image_shape: Sequence[int], model_size: int) -> None:
    """Raise if env images cannot be block-averaged to the model's square image size."""
    h, w = int(image_shape[0]), int(image_shape[1])
    if h != w or h % model_size != 0:
        raise ValueError(
            f"The env's images are {h}x{w} but the world model takes {model_size}x{model_size}: "
            f"use a square image size that is a multiple of {model_size}"
        )


class Episode:
    """One scene's frames of the current episode, in the order seen.

    Attributes:
        images: ``(S, S, 3)`` uint8 frames at the model's image size.
        viewpoints: ``(D,)`` float32 viewpoints.
        maps: ``(c, g, g)`` per-patch maps of the frames, kept for ``recall`` only.
    """

    __slots__ = ("images", "viewpoints", "maps")

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []
        self.viewpoints: list[np.ndarray] = []
        self.maps: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.images)

    def append(self, image: np.ndarray, viewpoint: np.ndarray, patch_map: np.ndarray | None, reset: bool) -> None:
        """Add a frame; ``reset`` starts a new episode with it."""
        if reset:
            self.images.clear()
            self.viewpoints.clear()
            self.maps.clear()
        self.images.append(image)
        self.viewpoints.append(viewpoint)
        if patch_map is not None:
            self.maps.append(patch_map)

    def context(self) -> tuple[np.ndarray, np.ndarray]:
        """The frames as one scene's context: ``(images (1, T, S, S, 3), viewpoints (1, T, D))``."""
        return np.stack(self.images)[None], np.stack(self.viewpoints)[None]


def peak_responses(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each channel's strongest patch in each of ``(T, c, g, g)`` maps.

    Returns:
        ``(values (T, c), column (T, c), row (T, c))``: the response and where its patch
        sits in the image, as offsets from the centre in [-0.5, 0.5] (patch centres).
    """
    t, c, g, _ = maps.shape
    flat = maps.reshape(t, c, g * g)
    index = flat.argmax(axis=-1)  # (T, c), row-major over (row, column)
    values = np.take_along_axis(flat, index[..., None], axis=-1)[..., 0]
    row, column = np.divmod(index, g)
    return values, ((column + 0.5) / g - 0.5).astype(np.float32), ((row + 0.5) / g - 0.5).astype(np.float32)


class Landmarks:
    """The ``landmarks`` memory of ``num_scenes`` scenes (module docstring, :data:`LANDMARK_FIELDS`).

    Per scene and feature channel it keeps the episode's peak response and the
    viewpoint it was seen from; :meth:`observe` puts them in the agent's frame.
    """

    def __init__(self, num_scenes: int, channels: int) -> None:
        self.peaks = np.zeros((num_scenes, channels), dtype=np.float32)
        # (N, c, 6): x, z, cos(yaw), sin(yaw) of the viewpoint, and the patch's column and row.
        self.where = np.zeros((num_scenes, channels, 6), dtype=np.float32)
        self.current = np.zeros((num_scenes, 4), dtype=np.float32)  # x, z, cos(yaw), sin(yaw) now

    def update(self, slot: int, maps: np.ndarray, viewpoints: np.ndarray, reset: bool) -> None:
        """Add ``(T, c, g, g)`` maps seen from ``(T, D)`` viewpoints, in order; ``reset`` forgets the episode.

        A later frame replaces a channel's memory only with a strictly higher response.
        """
        values, column, row = peak_responses(maps)
        best = values.argmax(axis=0)  # (c,): the first frame at each channel's peak
        channels = np.arange(values.shape[1])
        peak = values[best, channels]
        pose = viewpoints[:, [0, 2, 3, 4]]  # (T, 4)
        where = np.concatenate([pose[best], column[best, channels, None], row[best, channels, None]], axis=1)
        better = np.ones_like(peak, dtype=bool) if reset else peak > self.peaks[slot]
        self.peaks[slot, better] = peak[better]
        self.where[slot, better] = where[better]
        self.current[slot] = pose[-1]

    def observe(self, slots: np.ndarray) -> np.ndarray:
        """``(N, c, 7)`` float32: per channel the fields of :data:`LANDMARK_FIELDS`."""
        where, now = self.where[slots], self.current[slots, None]  # (N, c, 6), (N, 1, 4)
        dx, dz = where[..., 0] - now[..., 0], where[..., 1] - now[..., 1]
        cos, sin = now[..., 2], now[..., 3]
        fields = [
            self.peaks[slots],
            *to_agent_frame(dx, dz, cos, sin),
            where[..., 2] * cos + where[..., 3] * sin,
            where[..., 3] * cos - where[..., 2] * sin,
            where[..., 4],
            where[..., 5],
        ]
        return np.stack(fields, axis=-1)


class RepresentationState:
    """Running GQN scene representations of ``num_scenes`` scenes.

    The sums live in a numpy array: adding a frame costs one encoder pass and a
    numpy add, with no further torch dispatch on the per-step path.

    Args:
        model: A :class:`world_model.GQN` (used in eval mode, without gradients).
        num_scenes: How many scenes to track (sub-envs).
        device: Where to run the encoder.
        patches: Keep the latest frame's per-patch map (the ``patches`` key).
        recall: Keep every frame's per-patch map for :meth:`recall` (the ``recall`` key).
        landmarks: Keep each channel's peak response of the episode (the ``landmarks`` key).
        map_key: Encode the map head's channels at every step (the ``map`` key).
        motion: Observe the last move (the ``motion`` key).
    """

    def __init__(
        self,
        model: Any,
        num_scenes: int,
        device: str | torch.device = "cpu",
        patches: bool = False,
        recall: bool = False,
        landmarks: bool = False,
        map_key: bool = False,
        motion: bool = False,
    ) -> None:
        self.model = model.eval().to(device)
        self.keep_motion = motion
        self.device = torch.device(device)
        self.config = model.config
        self.sums = np.zeros((num_scenes, *self.config.representation_shape), dtype=np.float32)  # (N, C, h, w)
        self.counts = np.zeros(num_scenes, dtype=np.int64)
        # A map head's channels are for imagination: unless observed (``map``), the per-step path
        # leaves them out and :meth:`imagine` adds the frames not yet in them (``map_frames`` per scene).
        self.lazy_map = bool(self.config.map_channels) and not map_key
        self.map_frames = np.zeros(num_scenes, dtype=np.int64)
        self.last = np.zeros_like(self.sums)  # (N, C, h, w): the latest frame's encoding per scene
        # The latest frame's per-patch features, (N, c, g, g), when asked for (patch representation only).
        self.patches: np.ndarray | None = None
        if patches or recall or landmarks:
            if not hasattr(model.representation, "patch_map"):
                key = "patches" if patches else "recall" if recall else "landmarks"
                raise ValueError(
                    f"The {key!r} observation needs a model with the 'patch' "
                    f"representation network, this one has {model.config.representation!r}"
                )
            g = model.representation.grid
            self.patches = np.zeros((num_scenes, self.config.patch_channels, g, g), dtype=np.float32)
        self.keep_recall = recall
        self.landmarks = Landmarks(num_scenes, self.config.patch_channels) if landmarks else None
        self.episodes = [Episode() for _ in range(num_scenes)]
        # The per-step path of a patch network on the CPU runs in numpy (see add_one).
        net = model.representation
        cpu = self.device.type == "cpu" and all(t.dtype == torch.float32 for t in net.parameters())
        # A grid map head is placed on the floor by torch only; it is left to imagination (lazy) or torch.
        numpy_ok = cpu and isinstance(net, PatchRepresentation) and (self.lazy_map or not net.map_grid)
        self._numpy_encoder = NumpyPatchEncoder(net) if numpy_ok else None

    @classmethod
    def for_keys(
        cls, model: Any, num_scenes: int, device: str | torch.device, obs_keys: Sequence[str]
    ) -> RepresentationState:
        """The state that keeps what the observation keys ``obs_keys`` read, and nothing more."""
        keys = set(obs_keys)
        return cls(
            model,
            num_scenes,
            device,
            patches=bool(set(PATCH_KEYS) & keys),
            recall="recall" in keys,
            landmarks="landmarks" in keys,
            map_key="map" in keys,
            motion="motion" in keys,
        )

    @property
    def size(self) -> int:
        """Length of the flat representation an agent observes: r's first ``r_channels``.

        A model with a map head (``ModelConfig.map_channels``) keeps its channels in the
        sums, for imagination, but they are the generator's, not the observation's.
        """
        _, h, w = self.config.representation_shape
        return self.config.r_channels * h * w

    def _prepare(self, images: np.ndarray, viewpoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frames at the model's size, checked: ``(N, S, S, 3)`` uint8 and ``(N, D)`` float32."""
        images = _to_model_size(np.asarray(images), self.config.image_size)
        viewpoints = np.asarray(viewpoints, dtype=np.float32)
        if images.dtype != np.uint8 or images.ndim != 4 or viewpoints.shape != (len(images), self.config.viewpoint_dim):
            raise ValueError(
                f"Expected uint8 (N, H, W, 3) frames and (N, 7) viewpoints, got {images.shape}, {viewpoints.shape}"
            )
        if not np.isfinite(viewpoints).all():
            raise ValueError(f"Viewpoints must be finite, got {viewpoints.tolist()}")
        return images, viewpoints

    @torch.inference_mode()
    def encode(self, images: np.ndarray, viewpoints: np.ndarray) -> np.ndarray:
        """Encode ``(N, H, W, 3)`` uint8 frames with ``(N, 7)`` viewpoints: ``(N, C, h, w)`` float32.

        Frames from the scene env are well-formed by construction; this checks the
        cheap invariants (shape, dtype, finite viewpoints) in numpy and calls the
        representation network directly.
        """
        return self._encode(*self._prepare(images, viewpoints))[0]

    @torch.inference_mode()
    def _encode(self, images: np.ndarray, viewpoints: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Frames already through :meth:`_prepare` -> ``(r (N, C, h, w), patches (N, c, g, g) or None)``.

        The patches come from the same forward pass (the representation network's map
        before its head), and only when this state keeps them.
        """
        x = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).float().mul_(1 / 255)  # (N, 3, S, S)
        v = torch.from_numpy(viewpoints).to(self.device)
        if self.patches is None:
            return self.model.representation(x, v).cpu().numpy(), None  # (N, C, h, w)
        net = self.model.representation
        patches = net.patch_map(x)  # (N, g, g, c)
        # (N, C, 1, 1) and (N, g, g, c) -> (N, c, g, g)
        return net.head(patches, v).cpu().numpy(), patches.permute(0, 3, 1, 2).cpu().numpy()

    def add(
        self, slots: np.ndarray, images: np.ndarray, viewpoints: np.ndarray, reset: np.ndarray | None = None
    ) -> None:
        """Encode one frame per slot (one forward pass) and add it to that slot's sum.

        Args:
            slots: ``(N,)`` indices of the scenes the frames belong to.
            images: ``(N, H, W, 3)`` uint8 frames (block-averaged to the model size).
            viewpoints: ``(N, 7)`` viewpoints.
            reset: Optional ``(N,)`` bools: start these slots afresh with this frame.
        """
        images, viewpoints = self._prepare(images, viewpoints)
        r, patches = self._encode(images, viewpoints)
        slots = np.asarray(slots)
        if reset is not None and np.any(reset):
            self.sums[slots[reset]] = 0.0
            self.counts[slots[reset]] = 0
        self.sums[slots] += r
        self.counts[slots] += 1
        self.last[slots] = r
        if self.patches is not None:
            self.patches[slots] = patches
        for i, slot in enumerate(slots):
            patch_map = patches[i] if self.keep_recall else None
            fresh = reset is not None and bool(reset[i])
            self.episodes[slot].append(images[i], viewpoints[i], patch_map, fresh)
            self.map_frames[slot] = len(self.episodes[slot].images)  # torch encodes every channel
            if self.landmarks is not None:
                self.landmarks.update(slot, patches[i : i + 1], viewpoints[i : i + 1], self.counts[slot] == 1)

    def add_one(self, slot: int, image: np.ndarray, viewpoint: np.ndarray, reset: bool) -> None:
        """:meth:`add` for a single frame, without the per-call array bookkeeping (the per-step path).

        A ``patch`` network on the CPU encodes in numpy (:class:`world_model.representation.NumpyPatchEncoder`:
        the same pass without torch's per-operation overhead); other models through torch.
        """
        images, viewpoints = self._prepare(image[None], viewpoint[None])
        if self._numpy_encoder is not None:
            r, patches = self._numpy_encoder(images, viewpoints, map_head=not self.lazy_map)
        else:
            r, patches = self._encode(images, viewpoints)
        r = r[0]  # (C, h, w); without a lazy map head's channels, (r_channels, 1, 1)
        width = len(r)
        if reset:
            self.sums[slot] = 0.0
            self.counts[slot] = 0
            self.map_frames[slot] = 0
        self.sums[slot, :width] += r
        self.counts[slot] += 1
        self.last[slot, :width] = r
        if self.patches is not None:
            self.patches[slot] = patches[0]
        self.episodes[slot].append(images[0], viewpoints[0], patches[0] if self.keep_recall else None, reset)
        if width == len(self.sums[slot]):
            self.map_frames[slot] = len(self.episodes[slot].images)
        if self.landmarks is not None:
            self.landmarks.update(slot, patches, viewpoints, self.counts[slot] == 1)

    def reencode(self, slot: int) -> None:
        """Rebuild one slot from its episode's frames with the current weights (one forward pass)."""
        episode = self.episodes[slot]
        if not episode:
            return
        images, viewpoints = np.stack(episode.images), np.stack(episode.viewpoints)  # (T, S, S, 3), (T, D)
        r, patches = self._encode(images, viewpoints)  # (T, C, h, w)
        self.sums[slot] = r.sum(axis=0)
        self.counts[slot] = len(r)
        self.last[slot] = r[-1]
        self.map_frames[slot] = len(r)
        if self.patches is not None:
            self.patches[slot] = patches[-1]
        if self.keep_recall:
            episode.maps[:] = list(patches)
        if self.landmarks is not None:
            self.landmarks.update(slot, patches, viewpoints, reset=True)

    def recall(self, slot: int) -> np.ndarray:
        """The ``recall`` observation of one slot: ``(len(RECALL_TURNS) * c, g, g)``.

        Queries are the latest viewpoint with its heading turned by each of
        :data:`RECALL_TURNS`; each answer is the per-patch map of the episode's
        frame with the nearest viewpoint (Euclidean, as the generator's nearest view).
        """
        episode = self.episodes[slot]
        if not episode:
            raise RuntimeError(f"Scene {slot} has no frames yet")
        viewpoints = np.stack(episode.viewpoints)  # (T, D)
        current = viewpoints[-1]
        cos, sin = current[3], current[4]  # heading (viewpoint convention: gqn_env/envs/viewpoint.py)
        queries = np.repeat(current[None], len(RECALL_TURNS), axis=0)
        for i, turn in enumerate(RECALL_TURNS):
            queries[i, 3] = cos * math.cos(turn) - sin * math.sin(turn)
            queries[i, 4] = sin * math.cos(turn) + cos * math.sin(turn)
        nearest = ((viewpoints[None] - queries[:, None]) ** 2).sum(axis=-1).argmin(axis=1)  # (Q,)
        return np.concatenate([episode.maps[i] for i in nearest], axis=0)

    def observation(self, slots: np.ndarray, scale: str) -> np.ndarray:
        """Flat float32 representations ``(N, size)`` of the given slots."""
        slots = np.asarray(slots)
        flat = self.sums[slots, : self.config.r_channels].reshape(len(slots), -1)  # (N, size)
        if scale == "mean":
            flat = flat / np.maximum(self.counts[slots], 1)[:, None].astype(np.float32)
        return flat

    def observations(self, slots: np.ndarray, scale: str) -> dict[str, np.ndarray]:
        """The model's observation keys for the given slots.

        ``representation`` and ``view_encoding``, ``(N, size)`` each, ``patches`` ``(N, c, g, g)``,
        ``recall`` ``(N, 3c, g, g)``, ``landmarks`` ``(N, c, 7)`` and ``motion`` ``(N, 4)`` when
        kept, ``map`` ``(N, M)`` or ``(N, M, s, s)`` for a model with a vector or grid map head.
        """
        slots = np.asarray(slots)
        out = {
            "representation": self.observation(slots, scale),
            "view_encoding": self.last[slots, : self.config.r_channels].reshape(len(slots), -1),
        }
        if self.config.map_channels:
            counts = np.maximum(self.counts[slots], 1)[:, None].astype(np.float32)
            floor = self.sums[slots, self.config.r_channels :].reshape(len(slots), -1) / counts
            out["map"] = floor.reshape(len(slots), *self.config.map_shape)
        if self.patches is not None:
            out["patches"] = self.patches[slots].copy()
        if self.keep_recall:
            out["recall"] = np.stack([self.recall(int(slot)) for slot in slots])
        if self.landmarks is not None:
            out["landmarks"] = self.landmarks.observe(slots)
        if self.keep_motion:
            out["motion"] = np.stack([self._motion(int(slot)) for slot in slots])
        return out

    def _motion(self, slot: int) -> np.ndarray:
        viewpoints = self.episodes[slot].viewpoints
        if len(viewpoints) < 2:
            return np.zeros(len(MOTION_FIELDS), dtype=np.float32)
        return motion(viewpoints[-2], viewpoints[-1])

    @torch.inference_mode()
    def _complete_map(self, slot: int) -> None:
        """Add the episode's frames that the per-step path left out of the map head's channels."""
        episode, done = self.episodes[slot], int(self.map_frames[slot])
        if not self.lazy_map or done >= len(episode.images):
            return
        r, _ = self._encode(np.stack(episode.images[done:]), np.stack(episode.viewpoints[done:]))  # (T, C, h, w)
        channels = self.config.r_channels
        self.sums[slot, channels:] += r[:, channels:].sum(axis=0)
        self.last[slot, channels:] = r[-1, channels:]
        self.map_frames[slot] = len(episode.images)

    @torch.inference_mode()
    def imagine(self, slot: int, viewpoints: np.ndarray, seed: int = 0, sample: bool = False) -> np.ndarray:
        """Render ``(Q, 7)`` viewpoints from one slot's representation; ``(Q, S, S, 3)`` uint8.

        The sum is scaled to at most ``config.context_max`` frames' worth (module docstring),
        and the episode's frames are the context (:meth:`world_model.GQN.render`).
        ``sample=False`` (default) renders the prior-mean prediction, the model's best
        guess and what the evaluation scores; ``sample=True`` draws latents (seeded).
        """
        vps = np.asarray(viewpoints, dtype=np.float32).reshape(-1, VIEWPOINT_DIM)
        self._complete_map(slot)
        scaled = scale_to_context(self.sums[slot : slot + 1], self.counts[slot], self.config.context_max)
        r = torch.from_numpy(scaled).to(self.device).expand(len(vps), *self.sums.shape[1:])
        generator = torch.Generator(device=self.device).manual_seed(seed)
        episode = self.episodes[slot]
        context = episode.context() if episode else None  # (1, T, S, S, 3), (1, T, D)
        qv = torch.as_tensor(vps, device=self.device)
        images = self.model.render(
            r, qv, context=context, generator=generator, sample=sample, frames=max(int(self.counts[slot]), 1)
        )
        # (Q, 3, S, S) in [0, 1] -> (Q, S, S, 3) uint8
        return (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def _obs_space(env_space: spaces.Dict, state: RepresentationState, obs_keys: Sequence[str]) -> spaces.Dict:
    size = state.size
    parts = {
        "representation": spaces.Box(-np.inf, np.inf, (size,), dtype=np.float32),
        "view_encoding": spaces.Box(-np.inf, np.inf, (size,), dtype=np.float32),
        "viewpoint": env_space["viewpoint"],
        "image": env_space["image"],
        "motion": spaces.Box(-np.inf, np.inf, (len(MOTION_FIELDS),), dtype=np.float32),
    }
    if state.config.map_channels:
        parts["map"] = spaces.Box(-np.inf, np.inf, state.config.map_shape, dtype=np.float32)
    if state.patches is not None:
        c, g, _ = state.patches.shape[1:]
        parts["patches"] = spaces.Box(-np.inf, np.inf, (c, g, g), dtype=np.float32)
        parts["recall"] = spaces.Box(-np.inf, np.inf, (len(RECALL_TURNS) * c, g, g), dtype=np.float32)
        parts["landmarks"] = spaces.Box(-np.inf, np.inf, (c, len(LANDMARK_FIELDS)), dtype=np.float32)
    return spaces.Dict({k: parts[DEPRECATED_OBS_KEYS.get(k, k)] for k in obs_keys})


def check_model(model: Any) -> None:
    """Raise ValueError unless ``model`` is a GQN world model (a torch module with a ``config``)."""
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        hint = f"; to load a checkpoint file pass checkpoint={model!r}" if isinstance(model, (str, Path)) else ""
        raise ValueError(f"model must be a world_model.GQN, got {type(model).__name__} {model!r:.80}{hint}")


def check_options(obs_keys: Sequence[str], scale: str, model: Any = None) -> tuple[str, ...]:
    """Validate the wrapper's own arguments, which need no env; returns ``obs_keys`` as a tuple.

    Args:
        obs_keys: Observation keys, distinct names from :data:`OBS_KEYS`.
        scale: One of :data:`SCALES`.
        model: The world model, checked with :func:`check_model` (and for ``patches``) if given.

    Raises:
        ValueError: Naming the bad argument and what it accepts.
    """
    try:
        keys = () if isinstance(obs_keys, str) else tuple(obs_keys)
    except TypeError:  # not iterable
        keys = ()
    names = [DEPRECATED_OBS_KEYS.get(k, k) if isinstance(k, str) else k for k in keys]
    if not keys or len(set(names)) != len(names) or not set(names) <= set(OBS_KEYS):
        raise ValueError(f"obs_keys must be distinct names from {OBS_KEYS}, got {obs_keys!r}")
    for old in set(keys) & set(DEPRECATED_OBS_KEYS):
        warnings.warn(
            f"The observation key {old!r} is now {DEPRECATED_OBS_KEYS[old]!r}; {old!r} still works "
            "in this release and will be removed in the next",
            DeprecationWarning,
            stacklevel=3,
        )
    if not isinstance(scale, str) or scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if model is not None:
        check_model(model)
        for key in set(keys) & set(PATCH_KEYS):
            if not hasattr(model.representation, "patch_map"):
                raise ValueError(
                    f"The {key!r} observation needs a model with the 'patch' representation network, "
                    f"this one has {model.config.representation!r}"
                )
        if "map" in keys and not model.config.map_channels:
            raise ValueError(
                "The 'map' observation needs a model with a map head (ModelConfig.map_channels > 0; "
                "`gqn-gym add-map`), this one has none"
            )
    return keys


def _check_args(env_space: spaces.Space, obs_keys: Sequence[str], scale: str, model: Any) -> tuple[str, ...]:
    keys = check_options(obs_keys, scale, model)
    if not isinstance(env_space, spaces.Dict) or not {"image", "viewpoint"} <= set(env_space.spaces):
        raise ValueError(f"The wrapped env must observe a Dict with 'image' and 'viewpoint', got {env_space}")
    if model.config.viewpoint_dim != env_space["viewpoint"].shape[0]:
        raise ValueError(
            f"The model takes {model.config.viewpoint_dim}-d viewpoints, the env gives {env_space['viewpoint'].shape}"
        )
    check_image_size(env_space["image"].shape, model.config.image_size)
    return keys


class GQNRepresentation(gym.Wrapper):
    """Observation = the GQN representation of the episode's frames so far (one env).

    Args:
        env: A scene env observing ``Dict(image, viewpoint)``, e.g. ``GQNMazeScene-v0``.
        model: The GQN world model (kept frozen by this wrapper).
        obs_keys: Which of :data:`OBS_KEYS` to observe.
        scale: ``"mean"`` (default) or ``"sum"`` of the per-frame encodings.
        device: Where the encoder runs.
        emit_frames: Put each new frame in ``info["frame"]`` / ``info["frame_viewpoint"]``
            (for training the world model online from an RL agent's experience).
    """

    def __init__(
        self,
        env: gym.Env,
        model: Any,
        obs_keys: Sequence[str] = ("representation", "viewpoint"),
        scale: str = "mean",
        device: str | torch.device = "cpu",
        emit_frames: bool = False,
    ) -> None:
        super().__init__(env)
        self.obs_keys = _check_args(env.observation_space, obs_keys, scale, model)
        self.scale = scale
        self.emit_frames = emit_frames
        self.state = RepresentationState.for_keys(model, 1, device, self.obs_keys)
        self.observation_space = _obs_space(env.observation_space, self.state, self.obs_keys)
        self._last_obs: dict[str, np.ndarray] | None = None

    @property
    def model(self) -> Any:
        """The world model."""
        return self.state.model

    def _observe(self, obs: dict, reset: bool) -> dict:
        self.state.add_one(0, obs["image"], obs["viewpoint"], reset)
        self._last_obs = obs
        return self.current_observation()

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """Reset the scene and start the representation from its first frame."""
        obs, info = self.env.reset(seed=seed, options=options)
        return self._observe(obs, reset=True), self._info(info, obs)

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        """Step the scene and add the new frame to the representation."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._observe(obs, reset=False), reward, terminated, truncated, self._info(info, obs)

    def _info(self, info: dict, obs: dict) -> dict:
        if self.emit_frames:
            info = {**info, "frame": obs["image"], "frame_viewpoint": obs["viewpoint"]}
        return info

    def refresh(self) -> None:
        """Re-encode this episode's frames with the current weights (after a world-model update).

        Keeps the running representation consistent with one model: without it, an
        episode that spans an update would mix encodings from two models.
        """
        self.state.reencode(0)

    def current_observation(self) -> dict:
        """The observation of the current state (e.g. after :meth:`refresh`)."""
        if self._last_obs is None:
            raise RuntimeError("Call reset() first")
        model_obs = self.state.observations(np.zeros(1, dtype=np.int64), self.scale)
        out = {**{k: v[0] for k, v in model_obs.items()}, **self._last_obs}
        return {k: out[DEPRECATED_OBS_KEYS.get(k, k)] for k in self.obs_keys}

    @property
    def frames_seen(self) -> int:
        """Frames in the current representation."""
        return int(self.state.counts[0])

    def imagine(self, where: Pose | Sequence[float] | np.ndarray, seed: int = 0, sample: bool = False) -> np.ndarray:
        """Render what the model imagines from a pose or viewpoint, given the frames so far.

        Args:
            where: A :class:`Pose`, ``[x, z, yaw(, pitch)]`` (metres, radians), or a 7-d viewpoint.
            seed: Seed of the latent sample (with ``sample=True``).
            sample: Draw latents from the prior instead of rendering the prior-mean
                prediction (the default: the model's best guess, what the evaluation scores).

        Returns:
            uint8 ``(S, S, 3)`` image at the model's image size.
        """
        if self._last_obs is None:
            raise RuntimeError("Call reset() before imagine()")
        arr = None
        if not isinstance(where, Pose):
            try:
                arr = np.asarray(where, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                raise ValueError(
                    f"imagine() takes a Pose, [x, z, yaw(, pitch)] or a {VIEWPOINT_DIM}-d viewpoint, got {where!r}"
                ) from None
        if arr is not None and arr.shape[0] == VIEWPOINT_DIM:
            if not np.all(np.isfinite(arr)) or np.abs(arr).max() > 1.0 + 1e-6:
                raise ValueError(f"A viewpoint has finite components in [-1, 1], got {arr.tolist()}")
            viewpoint = arr.astype(np.float32)
        else:
            pose = where if isinstance(where, Pose) else Pose.from_array(arr)
            scene = self.env.unwrapped
            if not (scene.min_x <= pose.x <= scene.max_x and scene.min_z <= pose.z <= scene.max_z):
                raise ValueError(
                    f"Pose ({pose.x}, {pose.z}) is outside the maze, whose floor spans x in "
                    f"[{scene.min_x}, {scene.max_x}] and z in [{scene.min_z}, {scene.max_z}]"
                )
            viewpoint = scene.viewpoint(pose)
        return self.state.imagine(0, viewpoint[None], seed=seed, sample=sample)[0]

    @property
    def knows_top_down(self) -> bool:
        """Whether the model was trained on top-down queries (``top_down_fraction`` > 0)."""
        return getattr(self.model.config, "top_down_fraction", 0.0) > 0

    def imagine_top_down(self, samples: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The maze from above as the model imagines it from the frames so far, and its uncertainty.

        Returns:
            ``(map (S, S, 3) uint8`` (the prior-mean prediction), ``spread (S, S) float32)``: the
            per-pixel standard deviation over ``samples`` prior samples (seeded), in [0, 1] pixel
            units averaged over channels; zeros when ``samples`` < 2. Meaningful for a model
            trained with top-down queries (:attr:`knows_top_down`).
        """
        if self._last_obs is None:
            raise RuntimeError("Call reset() before imagine_top_down()")
        query = TOP_DOWN_VIEWPOINT[None]
        mean = self.state.imagine(0, query)[0]
        if samples < 2:
            return mean, np.zeros(mean.shape[:2], np.float32)
        draws = [self.state.imagine(0, query, seed=seed + k, sample=True)[0] for k in range(samples)]
        return mean, np.stack(draws).astype(np.float32).std(axis=0).mean(axis=-1) / 255

    def render(self) -> np.ndarray | None:
        """``rgb_array``: true view | imagined view | map, labelled, side by side.

        A model trained with top-down queries adds the imagined map and its uncertainty.
        """
        if self.env.unwrapped.render_mode != "rgb_array":
            return self.env.render()
        from gqn_env.wrappers.imagination import side_by_side

        scene = self.env.unwrapped
        pose = scene.pose
        imagined_map = self.imagine_top_down() if self.knows_top_down else None
        return side_by_side(
            true_view=scene.render_view(pose, image_size=scene.map_size),
            imagined=self.imagine(pose),
            top_map=scene.render_map(),
            frames_seen=self.frames_seen,
            imagined_map=imagined_map,
        )


class GQNRepresentationVector(gym.vector.VectorWrapper):
    """Batched :class:`GQNRepresentation` for a Gymnasium vector env of scene envs.

    All sub-envs' new frames are encoded in one forward pass per step. Works with
    the default ``NEXT_STEP`` autoreset: the step after an episode ends returns the
    next episode's first frame, and that sub-env's representation starts afresh.
    """

    def __init__(
        self,
        env: gym.vector.VectorEnv,
        model: Any,
        obs_keys: Sequence[str] = ("representation", "viewpoint"),
        scale: str = "mean",
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(env)
        mode = env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        if mode != gym.vector.AutoresetMode.NEXT_STEP:
            raise ValueError(f"GQNRepresentationVector needs autoreset_mode NEXT_STEP, got {mode}")
        self.obs_keys = _check_args(env.single_observation_space, obs_keys, scale, model)
        self.scale = scale
        self.state = RepresentationState.for_keys(model, env.num_envs, device, self.obs_keys)
        self.single_observation_space = _obs_space(env.single_observation_space, self.state, self.obs_keys)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, env.num_envs)
        self._slots = np.arange(env.num_envs)
        self._autoreset = np.zeros(env.num_envs, dtype=bool)

    def _observe(self, obs: dict, reset: np.ndarray) -> dict:
        self.state.add(self._slots, obs["image"], obs["viewpoint"], reset)
        out = {**self.state.observations(self._slots, self.scale), **obs}
        return {k: out[DEPRECATED_OBS_KEYS.get(k, k)] for k in self.obs_keys}

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """Reset every sub-env."""
        obs, info = self.env.reset(seed=seed, options=options)
        self._autoreset[:] = False
        return self._observe(obs, np.ones(self.num_envs, dtype=bool)), info

    def step(self, actions: Any) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Step all sub-envs; one encoder pass for all new frames."""
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        out = self._observe(obs, self._autoreset.copy())
        self._autoreset = np.logical_or(terminated, truncated)
        return out, rewards, terminated, truncated, info

"""GQNMaze: the maze scene seen through a GQN world model.

``gym.make("GQNMaze-v0")`` builds a :class:`GQNMazeScene` at the world model's
image size and wraps it in :class:`gqn_env.wrappers.GQNRepresentation` with the
bundled world model (a ``cpu``-preset GQN trained by this project, shipped in
``gqn_env/assets``), so it is useful on first use with no training and no download.

The default observation is what PPO learns fastest from on the project's RL
benchmark (docs/rl.md): the current frame's per-patch map (``patches``), its
encoding (``view_encoding``) and the ``viewpoint``, :data:`DEFAULT_OBS_KEYS`. The episode's
scene representation (``representation``, the paper's r) is one ``obs_keys``
entry away; on that benchmark it slowed the policy down.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from gqn_env.registration import max_episode_steps_from_gym_make

BUNDLED_CHECKPOINT = Path(__file__).resolve().parent.parent / "assets" / "gqn_maze_cpu.pt"

_MODEL_CACHE: dict[tuple[str, str], Any] = {}

#: The default observation keys (module docstring); a model without the ``patch``
#: representation network has no ``patches``, and gets :data:`DEFAULT_OBS_KEYS_NO_PATCHES`.
DEFAULT_OBS_KEYS = ("patches", "view_encoding", "viewpoint")
DEFAULT_OBS_KEYS_NO_PATCHES = ("view_encoding", "viewpoint")


def bundled_checkpoint() -> Path:
    """Path of the checkpoint shipped with the package."""
    if not BUNDLED_CHECKPOINT.exists():
        raise FileNotFoundError(
            f"The bundled world model {BUNDLED_CHECKPOINT} is missing from this installation; "
            "pass checkpoint=... or model=..., or train one with `gqn-gym train`"
        )
    return BUNDLED_CHECKPOINT


def load_world_model(checkpoint: str | Path | None = None, device: str | torch.device = "cpu") -> Any:
    """Load a GQN from ``checkpoint`` (default: the bundled one), cached per process.

    The cache holds frozen eval-mode models; every env built from the same file
    shares one copy of the weights.
    """
    from world_model import load_model

    path = Path(checkpoint) if checkpoint is not None else bundled_checkpoint()
    key = (str(path.resolve()), str(device))
    if key not in _MODEL_CACHE:
        model = load_model(path, device=device)
        for p in model.parameters():
            p.requires_grad_(False)
        _MODEL_CACHE[key] = model
    return _MODEL_CACHE[key]


def make_gqn_maze(
    num_rows: int = 3,
    num_cols: int = 3,
    image_size: int | None = None,
    model: Any = None,
    checkpoint: str | Path | None = None,
    obs_keys: Sequence[str] | None = None,
    scale: str = "mean",
    device: str | torch.device = "cpu",
    render_mode: str | None = None,
    emit_frames: bool = False,
    **scene_kwargs: Any,
):
    """Build a GQNMaze env: a maze scene whose observation is the GQN scene representation.

    Args:
        num_rows: Maze rows.
        num_cols: Maze columns.
        image_size: Egocentric image size; default the model's. Must be a multiple
            of the model's size (frames are block-averaged down for the encoder).
        model: A :class:`world_model.GQN` to use instead of the bundled one (``None``: the bundled one).
        checkpoint: A checkpoint path to load instead of the bundled one (not with ``model``).
        obs_keys: Observation keys, from ``representation``, ``view_encoding`` (the current frame's encoding),
            ``patches`` (its per-patch map), ``recall`` (the maps of the episode's frames nearest the
            views to the left, behind and right), ``landmarks`` (each feature channel's peak response of the
            episode and where it was seen from, relative to the agent), ``map`` (the episode's mean of a
            map head's channels, for a model with one), ``viewpoint``, ``image``.
            Default (None): :data:`DEFAULT_OBS_KEYS`.
        scale: ``"mean"`` or ``"sum"`` of per-frame encodings (see the wrapper).
        device: Where the encoder runs.
        render_mode: ``"rgb_array"`` shows true view | imagined view | map.
        emit_frames: Put each frame in ``info`` (for online world-model training).
        **scene_kwargs: Passed to :class:`GQNMazeScene` (``room_size``, ``max_episode_steps``, ...).
            Under ``gym.make(id, max_episode_steps=T)`` the scene's limit is ``T``.

    Returns:
        The wrapped env.

    Raises:
        ValueError: On a bad argument, before the model loads or any OpenGL starts.
        TypeError: On an argument that neither this function nor the scene takes.
    """
    # gym.make(id, max_episode_steps=T) gives T to its TimeLimit only; the scene takes the same T.
    limit = max_episode_steps_from_gym_make(sys._getframe(1))
    if limit is not None:
        scene_kwargs["max_episode_steps"] = limit
    # Every argument is checked before the model loads and before the scene opens an OpenGL context.
    from gqn_env.envs.maze_scene import GQNMazeScene
    from gqn_env.wrappers.representation import GQNRepresentation, check_image_size, check_model, check_options
    from world_model.checkpoint import check_device

    if model is not None and checkpoint is not None:
        raise ValueError("Pass either model= or checkpoint=, not both")
    if model is not None:
        check_model(model)
    if checkpoint is not None and not isinstance(checkpoint, (str, Path)):
        raise ValueError(f"checkpoint must be a path to a checkpoint file, got {checkpoint!r}")
    check_options(DEFAULT_OBS_KEYS if obs_keys is None else obs_keys, scale)
    if not isinstance(emit_frames, bool):
        raise ValueError(f"emit_frames must be True or False, got {emit_frames!r}")
    check_device(device)
    unknown = [name for name in scene_kwargs if name not in GQNMazeScene.argument_names()]
    if unknown:
        own = [name for name in inspect.signature(make_gqn_maze).parameters if name != "scene_kwargs"]
        scene_only = [name for name in GQNMazeScene.argument_names() if name not in own]
        raise TypeError(
            f"GQNMaze got unexpected keyword argument(s) {unknown}; it takes {own} and the scene's {scene_only}"
        )
    sized = {} if image_size is None else {"image_size": image_size}
    GQNMazeScene.check_arguments(num_rows=num_rows, num_cols=num_cols, render_mode=render_mode, **sized, **scene_kwargs)

    if model is None:
        model = load_world_model(checkpoint, device)
    if obs_keys is None:
        obs_keys = DEFAULT_OBS_KEYS if hasattr(model.representation, "patch_map") else DEFAULT_OBS_KEYS_NO_PATCHES
    check_options(obs_keys, scale, model)
    size = model.config.image_size if image_size is None else image_size
    check_image_size((size, size) if isinstance(size, int) else size, model.config.image_size)
    scene = GQNMazeScene(num_rows=num_rows, num_cols=num_cols, image_size=size, render_mode=render_mode, **scene_kwargs)
    try:
        return GQNRepresentation(scene, model, obs_keys=obs_keys, scale=scale, device=device, emit_frames=emit_frames)
    except BaseException:
        scene.close()  # its GL context and objects would otherwise live as long as the process
        raise

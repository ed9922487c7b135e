"""GQNMazeScene: a procedurally generated MiniWorld maze of textured rooms."""

from __future__ import annotations

import contextlib
import ctypes
import inspect
import io
import math
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces, utils

from gqn_env import _headless
from gqn_env.registration import check_max_episode_steps, max_episode_steps_from_gym_make

_headless.configure()

try:
    from miniworld.entity import COLOR_NAMES, Box, Key
    from miniworld.miniworld import MiniWorldEnv
    from miniworld.opengl import FrameBuffer
    from miniworld.params import DEFAULT_PARAMS
    from miniworld.utils import get_file_path
    from pyglet import gl
except Exception as err:  # pyglet raises several unrelated types when GL is missing
    _headless.raise_missing_opengl(err)
_headless.allow_missing_fonts()

from gqn_env.envs import _textures  # noqa: E402

_textures.install()
from gqn_env.envs.viewpoint import VIEWPOINT_DIM, Pose, SceneBounds, pose_to_viewpoint, wrap_angle  # noqa: E402

#: Wall textures drawn per room (distinct while the list lasts).
WALL_TEXTURES: tuple[str, ...] = (
    "brick_wall",
    "cinder_blocks",
    "concrete",
    "drywall",
    "marble",
    "wood",
    "wood_planks",
    "stucco",
    "metal_grill",
    "cardboard",
    "rock",
    "slime",
)
#: Floor textures, one drawn per scene.
FLOOR_TEXTURES: tuple[str, ...] = ("floor_tiles_bw", "asphalt", "grass", "concrete_tiles", "wood", "marble")
#: Shapes of the distractor objects. (MiniWorld's ball mesh has ~10k lines and
#: made rendering ~3x slower; a tall pillar is the cheap third shape.)
OBJECT_SHAPES: tuple[str, ...] = ("box", "pillar", "key")
#: Most rooms along a side: a 16x16 maze builds and resets in about 5 s on 2 busy cores; 10**6 never returned.
MAX_MAZE_SIDE = 16
#: Colour of the goal (a box); distractors use the other MiniWorld colours.
GOAL_COLOR = "red"
#: Side of the goal box (metres).
GOAL_SIZE = 0.8


def _texture_exists(name: str) -> bool:
    return os.path.exists(get_file_path("textures", f"{name}_1", "png"))


def _check_textures(kind: str, names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(names, str) or len(names) == 0:
        raise ValueError(f"{kind} must be a non-empty sequence of texture names, got {names!r}")
    unknown = [n for n in names if not _texture_exists(n)]
    if unknown:
        raise ValueError(f"Unknown {kind} {unknown}; MiniWorld ships textures such as {list(WALL_TEXTURES)}")
    return tuple(names)


def _parse_image_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        hw = (int(image_size), int(image_size))
    elif (
        isinstance(image_size, Sequence)
        and len(image_size) == 2
        and all(isinstance(v, (int, np.integer)) for v in image_size)
    ):
        hw = (int(image_size[0]), int(image_size[1]))
    else:
        raise ValueError(f"image_size must be an int or (height, width), got {image_size!r}")
    if min(hw) <= 0 or max(hw) > 1024:
        raise ValueError(f"image_size must be in 1..1024, got {image_size!r}")
    return hw


#: What ``render()`` can show: the agent's egocentric view or the whole maze from above.
RENDER_CAMERAS = ("agent", "top")

#: Old argument names still accepted (with a ``DeprecationWarning``), to be removed in the next release.
DEPRECATED_ARGUMENTS = {"view": "render_camera"}


def _renamed_arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with deprecated names replaced by the new ones (warning once per name)."""
    out = dict(kwargs)
    for old, new in DEPRECATED_ARGUMENTS.items():
        if old in out:
            if new in out:
                raise TypeError(f"Pass {new}= only, not both {new}= and its old name {old}=")
            warnings.warn(
                f"GQNMazeScene's {old}= argument is now {new}=; {old}= still works in this release "
                "and will be removed in the next",
                DeprecationWarning,
                stacklevel=3,
            )
            out[new] = out.pop(old)
    return out


def _constructor_defaults(cls: type) -> dict[str, Any]:
    """``{name: default}`` of ``cls.__init__``'s named arguments."""
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in params if p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD}


class _StaticBox(Box):
    """A box that never moves, so it is compiled into the static display list."""

    @property
    def is_static(self) -> bool:
        return True


def _make_object(shape: str, colour: str, size: float = 0.6) -> Any:
    # Nothing in these scenes moves but the agent (it cannot pick objects up), so
    # every object is static and drawn from the display list: per-frame mesh
    # drawing made a step ~4x slower than MiniWorld's own maze.
    if shape == "box":
        return _StaticBox(color=colour, size=size)
    if shape == "pillar":
        return _StaticBox(color=colour, size=[0.4 * size, 2.0 * size, 0.4 * size])
    ent = Key(color=colour)
    ent.static = True
    return ent


class GQNMazeScene(MiniWorldEnv, utils.EzPickle):
    """A maze of textured rooms seen through an egocentric camera, for GQN training.

    ## Description

    A ``num_rows`` x ``num_cols`` grid of square rooms joined by a random spanning
    tree of doorways (recursive backtracking, so the maze is always connected).
    Each room gets its own wall texture (distinct while the texture list lasts),
    the scene one random floor texture, each room ``objects_per_room`` coloured
    objects (boxes, pillars, keys) and the scene one red goal box. Every random
    choice is drawn from the env's seeded generator: ``reset(seed=s)`` gives the
    same scene and the same frames.

    ## Action Space

    ``Discrete(3)``: 0 turn left, 1 turn right, 2 move forward (as MiniWorld's mazes).

    ## Observation Space

    ``Dict(image=Box(0, 255, (H, W, 3), uint8), viewpoint=Box(-1, 1, (7,), float32))``.
    The viewpoint layout is documented in :mod:`gqn_env.envs.viewpoint`.

    ## Rewards

    ``1 - 0.2 * step_count / max_episode_steps`` on reaching the goal box (the
    episode terminates), 0 otherwise. The episode truncates at ``max_episode_steps``.

    ## Info

    Every ``reset`` and ``step`` returns ``info`` with ``pose`` (float64
    ``[x, z, yaw, pitch]``, radians), ``viewpoint`` (as in the observation) and
    ``is_success`` (goal reached on this step).

    ## Arguments

    * ``num_rows``, ``num_cols``: maze size in rooms (1 to ``MAX_MAZE_SIDE`` = 16).
    * ``room_size``: side of a room in metres (> 0); ``gap_size`` the doorway depth.
    * ``image_size``: egocentric image size, int or ``(height, width)``; default 64.
    * ``objects_per_room``: distractor objects in each room (>= 0).
    * ``wall_textures``, ``floor_textures``: texture names to draw from.
    * ``max_episode_steps``: default ``24 * rows * cols`` (as MiniWorld). The value given
      to ``gym.make(id, max_episode_steps=T)`` is used here too (it drives both the
      truncation and the reward; ``gym.make``'s own ``TimeLimit`` then agrees).
    * ``map_size``: side in pixels of :meth:`render_map`'s picture.
    * ``domain_rand``: MiniWorld's domain randomisation (lights, camera jitter), a bool.
    * ``render_mode``: ``"rgb_array"`` (a picture at ``map_size``) or ``"human"`` (MiniWorld's window).
    * ``render_camera``: what ``render()`` shows, ``"agent"`` (default: the egocentric
      view) or ``"top"`` (the whole maze from above, as :meth:`render_map`).
      MiniWorld calls this argument ``view``; that name still works, deprecated.

    Any other argument raises ``TypeError`` listing those accepted (:meth:`check_arguments`).
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 30}

    @classmethod
    def argument_names(cls) -> list[str]:
        """Names of the keyword arguments the constructor takes."""
        return list(_constructor_defaults(cls))

    @classmethod
    def check_arguments(cls, **kwargs: Any) -> None:
        """Validate constructor arguments without building anything (no OpenGL is touched).

        Args:
            **kwargs: Any of the constructor's arguments; those left out take their defaults.

        Raises:
            TypeError: On an argument the constructor does not take (the message lists those it takes).
            ValueError: On a bad value (the message names the argument and the allowed values).
        """
        kwargs = _renamed_arguments(kwargs)
        unknown = [name for name in kwargs if name not in cls.argument_names()]
        if unknown:
            raise TypeError(
                f"{cls.__name__}() got unexpected keyword argument(s) {unknown}; it takes {cls.argument_names()}"
            )
        args = {**_constructor_defaults(cls), **kwargs}
        for name in ("num_rows", "num_cols"):
            value = args[name]
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 1 <= value <= MAX_MAZE_SIDE:
                raise ValueError(
                    f"{name} must be an integer in 1..{MAX_MAZE_SIDE} (larger mazes are slow to build), got {value!r}"
                )
        for name in ("room_size", "gap_size"):
            value = args[name]
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if args["room_size"] < 1.2:
            raise ValueError(f"room_size must be >= 1.2 m so the agent (radius 0.4) fits, got {args['room_size']!r}")
        objects = args["objects_per_room"]
        if not isinstance(objects, (int, np.integer)) or isinstance(objects, bool) or not 0 <= objects <= 4:
            raise ValueError(f"objects_per_room must be an integer in 0..4, got {objects!r}")
        check_max_episode_steps(args["max_episode_steps"])
        map_size = args["map_size"]
        if not isinstance(map_size, (int, np.integer)) or isinstance(map_size, bool) or not 16 <= map_size <= 2048:
            raise ValueError(f"map_size must be an integer in 16..2048, got {map_size!r}")
        if not isinstance(args["domain_rand"], (bool, np.bool_)):
            raise ValueError(f"domain_rand must be True or False, got {args['domain_rand']!r}")
        render_mode = args["render_mode"]
        if render_mode is not None and render_mode not in cls.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {cls.metadata['render_modes']} or None, got {render_mode!r}")
        if args["render_camera"] not in RENDER_CAMERAS:
            raise ValueError(f"render_camera must be one of {RENDER_CAMERAS}, got {args['render_camera']!r}")
        _parse_image_size(args["image_size"])
        _check_textures("wall_textures", args["wall_textures"])
        _check_textures("floor_textures", args["floor_textures"])

    def __init__(
        self,
        num_rows: int = 3,
        num_cols: int = 3,
        room_size: float = 3.0,
        gap_size: float = 0.25,
        image_size: int | Sequence[int] = 64,
        objects_per_room: int = 1,
        wall_textures: Sequence[str] = WALL_TEXTURES,
        floor_textures: Sequence[str] = FLOOR_TEXTURES,
        max_episode_steps: int | None = None,
        map_size: int = 256,
        domain_rand: bool = False,
        render_mode: str | None = None,
        render_camera: str = "agent",
        **kwargs: Any,
    ) -> None:
        """Create the scene env; every argument is validated before OpenGL starts."""
        # Built by gym.make(id, max_episode_steps=T): T goes to gym.make's TimeLimit only; use it here too.
        max_episode_steps = max_episode_steps_from_gym_make(sys._getframe(1)) or max_episode_steps
        if "view" in kwargs:  # MiniWorld's name for render_camera
            if render_camera != "agent":
                raise TypeError("Pass render_camera= only, not both render_camera= and its old name view=")
            kwargs = _renamed_arguments(kwargs)  # warns
            render_camera = kwargs.pop("render_camera")
        # The constructor's arguments, checked first and kept for pickling (EzPickle) at the end.
        arguments = dict(
            num_rows=num_rows,
            num_cols=num_cols,
            room_size=room_size,
            gap_size=gap_size,
            image_size=image_size,
            objects_per_room=objects_per_room,
            wall_textures=wall_textures,
            floor_textures=floor_textures,
            max_episode_steps=max_episode_steps,
            map_size=map_size,
            domain_rand=domain_rand,
            render_mode=render_mode,
            render_camera=render_camera,
            **kwargs,
        )
        self.check_arguments(**arguments)
        height, width = _parse_image_size(image_size)

        self.num_rows = int(num_rows)
        self.num_cols = int(num_cols)
        self.room_size = float(room_size)
        self.gap_size = float(gap_size)
        self.objects_per_room = int(objects_per_room)
        self.wall_textures = _check_textures("wall_textures", wall_textures)
        self.floor_textures = _check_textures("floor_textures", floor_textures)
        self.map_size = int(map_size)
        self._display_list = 0  # our own GL display list id (see _render_static)
        self._view_fbs: dict[tuple[int, int], Any] = {}

        try:
            # MiniWorld prints "Falling back to num_samples=4" per frame buffer.
            with contextlib.redirect_stdout(io.StringIO()):
                MiniWorldEnv.__init__(
                    self,
                    max_episode_steps=max_episode_steps or 24 * self.num_rows * self.num_cols,
                    obs_width=width,
                    obs_height=height,
                    window_width=self.map_size,
                    window_height=self.map_size,
                    params=DEFAULT_PARAMS if domain_rand else DEFAULT_PARAMS.no_random(),
                    domain_rand=domain_rand,
                    render_mode=render_mode,
                    view=arguments["render_camera"],
                )
        except Exception as err:
            if "gl" in type(err).__module__.lower() or "pyglet" in type(err).__module__.lower():
                _headless.raise_missing_opengl(err)
            raise
        utils.EzPickle.__init__(self, **arguments)
        self.action_space = spaces.Discrete(self.actions.move_forward + 1)
        self.observation_space = spaces.Dict(
            {
                "image": spaces.Box(0, 255, (height, width, 3), dtype=np.uint8),
                "viewpoint": spaces.Box(-1.0, 1.0, (VIEWPOINT_DIM,), dtype=np.float32),
            }
        )

    # ------------------------------------------------------------------ world
    def _gen_world(self) -> None:
        rng = self.np_random
        pitch = self.room_size + self.gap_size
        num_rooms = self.num_rows * self.num_cols
        # Distinct wall textures per room while they last, then cycle.
        order = rng.permutation(len(self.wall_textures))
        walls = [self.wall_textures[order[i % len(order)]] for i in range(num_rooms)]
        floor = self.floor_textures[int(rng.integers(len(self.floor_textures)))]

        grid = []
        for j in range(self.num_rows):
            row = []
            for i in range(self.num_cols):
                row.append(
                    self.add_rect_room(
                        min_x=i * pitch,
                        max_x=i * pitch + self.room_size,
                        min_z=j * pitch,
                        max_z=j * pitch + self.room_size,
                        wall_tex=walls[j * self.num_cols + i],
                        floor_tex=floor,
                    )
                )
            grid.append(row)
        self.grid_rooms = [room for row in grid for room in row]

        # Spanning tree by iterative recursive-backtracking: always connected.
        # Each doorway's centre on the floor, (x, z), is kept for privileged ground truth (privileged.py).
        self.doorways: list[tuple[float, float]] = []
        visited = {(0, 0)}
        stack = [(0, 0)]
        while stack:
            i, j = stack[-1]
            neighbours = [
                (i + di, j + dj)
                for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1))
                if 0 <= i + di < self.num_cols and 0 <= j + dj < self.num_rows and (i + di, j + dj) not in visited
            ]
            if not neighbours:
                stack.pop()
                continue
            ni, nj = neighbours[int(rng.integers(len(neighbours)))]
            a, b = grid[j][i], grid[nj][ni]
            if ni == i:  # vertical neighbour: doorway spans the room's x extent
                self.connect_rooms(a, b, min_x=a.min_x, max_x=a.max_x)
                self.doorways.append(((a.min_x + a.max_x) / 2, (max(a.min_z, b.min_z) - self.gap_size / 2)))
            else:
                self.connect_rooms(a, b, min_z=a.min_z, max_z=a.max_z)
                self.doorways.append(((max(a.min_x, b.min_x) - self.gap_size / 2), (a.min_z + a.max_z) / 2))
            visited.add((ni, nj))
            stack.append((ni, nj))

        colours = [c for c in COLOR_NAMES if c != GOAL_COLOR]
        for room in self.grid_rooms:
            for _ in range(self.objects_per_room):
                shape = OBJECT_SHAPES[int(rng.integers(len(OBJECT_SHAPES)))]
                colour = colours[int(rng.integers(len(colours)))]
                self.place_entity(_make_object(shape, colour), room=room)
        self.goal = self.place_entity(_make_object("box", GOAL_COLOR, size=GOAL_SIZE))
        self.place_agent()

    @property
    def bounds(self) -> SceneBounds:
        """The floor extent used to scale viewpoints (valid after ``reset``)."""
        return SceneBounds(self.min_x, self.max_x, self.min_z, self.max_z, float(self.grid_rooms[0].wall_height))

    # --------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """Generate a new scene; same seed, same scene and frames."""
        self._check_open()
        image, _ = super().reset(seed=seed, options=options)
        return self._observe(image), self._info(success=False)

    def step(self, action: int) -> tuple[dict, float, bool, bool, dict]:
        """Take one action; reward and termination as MiniWorld's mazes."""
        if not self.action_space.contains(action):
            raise ValueError(f"Invalid action {action!r} for action space {self.action_space}")
        self._check_open()
        image, reward, terminated, truncated, _ = super().step(action)
        success = bool(self.near(self.goal))
        if success:
            reward += self._reward()
            terminated = True
        return self._observe(image), float(reward), terminated, truncated, self._info(success)

    def _check_open(self) -> None:
        if self.shadow_window is None:
            raise RuntimeError("This env is closed (close() released its OpenGL context); make a new one")

    @property
    def pose(self) -> Pose:
        """The agent's current pose (yaw wrapped to [-pi, pi))."""
        return Pose(
            x=float(self.agent.pos[0]),
            z=float(self.agent.pos[2]),
            yaw=wrap_angle(float(self.agent.dir)),
            pitch=math.radians(float(self.agent.cam_pitch)),
        )

    def viewpoint(self, pose: Pose | None = None) -> np.ndarray:
        """The GQN viewpoint vector of ``pose`` (default: the agent's pose)."""
        return pose_to_viewpoint(self.pose if pose is None else pose, self.bounds, float(self.agent.cam_height))

    def _observe(self, image: np.ndarray) -> dict:
        return {"image": image, "viewpoint": self.viewpoint()}

    def _info(self, success: bool) -> dict:
        return {"pose": self.pose.as_array(), "viewpoint": self.viewpoint(), "is_success": success}

    # -------------------------------------------------------------- rendering
    def render_view(self, pose: Pose | Sequence[float], image_size: int | Sequence[int] | None = None) -> np.ndarray:
        """Render the egocentric image seen from ``pose``; the env is left exactly as it was.

        Args:
            pose: A :class:`Pose` or ``[x, z, yaw(, pitch)]`` (metres, radians).
            image_size: Output size; defaults to the observation size.

        Returns:
            uint8 array ``(H, W, 3)``.
        """
        pose = pose if isinstance(pose, Pose) else Pose.from_array(pose)
        agent = self.agent
        saved = (agent.pos.copy(), agent.dir, agent.cam_pitch)
        try:
            agent.pos = np.array([pose.x, 0.0, pose.z])
            agent.dir = pose.yaw
            agent.cam_pitch = math.degrees(pose.pitch)
            return self.render_obs(self._view_framebuffer(image_size))
        finally:
            agent.pos, agent.dir, agent.cam_pitch = saved

    def _view_framebuffer(self, image_size: int | Sequence[int] | None) -> Any:
        if image_size is None:
            return self.obs_fb
        height, width = _parse_image_size(image_size)
        if (width, height) == (self.obs_fb.width, self.obs_fb.height):
            return self.obs_fb
        if (height, width) not in self._view_fbs:
            self.shadow_window.switch_to()
            with contextlib.redirect_stdout(io.StringIO()):
                self._view_fbs[(height, width)] = FrameBuffer(width, height, 8)
        return self._view_fbs[(height, width)]

    def render_map(self) -> np.ndarray:
        """Top-down picture of the whole scene with the agent, ``(map_size, map_size, 3)`` uint8."""
        return self.render_top_view(self.vis_fb)

    def render_top_down(self, image_size: int | Sequence[int] | None = None) -> np.ndarray:
        """The whole maze seen from directly above, without the agent: the GQN's top-down target.

        Orthographic, a 1 m margin around the floor, at the observation's size by default.
        Its viewpoint is :data:`~gqn_env.envs.viewpoint.TOP_DOWN_VIEWPOINT` in every scene.
        Leaves the env as it was. Returns ``(H, W, 3)`` uint8.
        """
        return self.render_top_view(self._view_framebuffer(image_size), render_agent=False)

    def render(self) -> np.ndarray | None:
        """``rgb_array``: the egocentric view (``render_camera="agent"``) or the map (``"top"``) at ``map_size``.

        ``human``: MiniWorld's window.
        """
        if self.render_mode == "rgb_array":
            if self.view == "top":
                return self.render_map()
            return self.render_view(self.pose, image_size=self.map_size)
        return super().render()

    def sample_free_pose(self, rng: np.random.Generator, max_tries: int = 1000) -> Pose:
        """Draw a pose inside a room where the agent would collide with nothing.

        Args:
            rng: The generator to draw from (the env's own state is not touched).
            max_tries: Rejection-sampling budget.

        Returns:
            A collision-free pose with yaw uniform in [-pi, pi) and pitch 0.
        """
        radius = self.agent.radius
        for _ in range(max_tries):
            room = self.grid_rooms[int(rng.integers(len(self.grid_rooms)))]
            x = rng.uniform(room.min_x + radius, room.max_x - radius)
            z = rng.uniform(room.min_z + radius, room.max_z - radius)
            if self.is_free(x, z):
                return Pose(x=float(x), z=float(z), yaw=float(rng.uniform(-math.pi, math.pi)))
        raise RuntimeError(f"No free pose found in {max_tries} tries")

    def is_free(self, x: float, z: float) -> bool:
        """Whether the agent could stand at ``(x, z)`` without touching walls or objects."""
        return not self.intersect(self.agent, np.array([x, 0.0, z]), self.agent.radius)

    # The base class compiles every env's static geometry into GL display list 1,
    # which all contexts of a process share: with two envs in one process the
    # second reset overwrote the first env's scene. Each env keeps its own list.
    def _render_static(self) -> None:
        self.shadow_window.switch_to()
        if not self._display_list:
            self._display_list = gl.glGenLists(1)
        gl.glNewList(self._display_list, gl.GL_COMPILE)
        gl.glLightfv(gl.GL_LIGHT0, gl.GL_POSITION, (gl.GLfloat * 4)(*self.light_pos + [1]))
        gl.glLightfv(gl.GL_LIGHT0, gl.GL_AMBIENT, (gl.GLfloat * 4)(*self.light_ambient))
        gl.glLightfv(gl.GL_LIGHT0, gl.GL_DIFFUSE, (gl.GLfloat * 4)(*self.light_color))
        gl.glEnable(gl.GL_LIGHTING)
        gl.glEnable(gl.GL_LIGHT0)
        gl.glShadeModel(gl.GL_SMOOTH)
        gl.glEnable(gl.GL_COLOR_MATERIAL)
        gl.glColorMaterial(gl.GL_FRONT_AND_BACK, gl.GL_AMBIENT_AND_DIFFUSE)
        gl.glEnable(gl.GL_TEXTURE_2D)
        for room in self.rooms:
            room._render()
        for ent in self.entities:
            if ent.is_static:
                ent.render()
        gl.glEndList()

    def _render_world(self, frame_buffer: Any, render_agent: bool) -> np.ndarray:
        gl.glCallList(self._display_list)
        for ent in self.entities:
            if not ent.is_static and ent is not self.agent:
                ent.render()
        if render_agent:
            self.agent.render()
        return frame_buffer.resolve()

    def close(self) -> None:
        """Release this env's OpenGL objects and hidden context, and close any window.

        MiniWorld's own ``close`` only closes the human-mode window: every env made
        and closed left its frame buffers (their textures and depth buffers, about
        5 MiB in Mesa's software renderer at the default ``map_size``), its display
        list and its hidden window's context behind. Safe to call more than once;
        the env cannot render afterwards.
        """
        window = getattr(self, "shadow_window", None)
        if window is not None:
            try:
                window.switch_to()
                if self._display_list:
                    gl.glDeleteLists(self._display_list, 1)
                for fb in (getattr(self, "obs_fb", None), getattr(self, "vis_fb", None), *self._view_fbs.values()):
                    if fb is not None:
                        _delete_framebuffer(fb)
                label = getattr(self, "text_label", None)
                if hasattr(label, "delete"):
                    label.delete()
            except Exception:  # noqa: BLE001 - the context may already be gone; close the rest regardless
                pass
            self._display_list = 0
            self._view_fbs.clear()
            window.close()
            self.shadow_window = None
        super().close()


def _delete_framebuffer(fb: Any) -> None:
    """Delete a MiniWorld ``FrameBuffer``'s two FBOs and the texture and depth buffer attached to each.

    MiniWorld keeps only the FBO ids; the attachments are found by asking each FBO.
    Call with the context that created ``fb`` current (FBOs are per context).
    """
    name = gl.GLint(0)
    for fbo in (fb.multi_fbo, fb.final_fbo):
        if not fbo.value:
            continue
        gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, fbo)
        attached = []
        for attachment in (gl.GL_COLOR_ATTACHMENT0, gl.GL_DEPTH_ATTACHMENT):
            gl.glGetFramebufferAttachmentParameteriv(
                gl.GL_FRAMEBUFFER, attachment, gl.GL_FRAMEBUFFER_ATTACHMENT_OBJECT_NAME, ctypes.byref(name)
            )
            attached.append(gl.GLuint(name.value))
        gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, 0)
        gl.glDeleteFramebuffers(1, ctypes.byref(fbo))
        texture, depth = attached  # MiniWorld attaches a texture as colour, a renderbuffer as depth
        if texture.value:
            gl.glDeleteTextures(1, ctypes.byref(texture))
        if depth.value:
            gl.glDeleteRenderbuffers(1, ctypes.byref(depth))
        fbo.value = 0

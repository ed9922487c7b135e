"""GQNMaze: the representation wrapper over a scene env, with a tiny (untrained) GQN."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from gqn_env.envs import gqn_maze, maze_scene
from gqn_env.envs.viewpoint import Pose
from gqn_env.wrappers import GQNRepresentation, GQNRepresentationVector, representation
from world_model import GQN, GQNConfig

SCENE = {"num_rows": 2, "num_cols": 2, "map_size": 64}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GQN(GQNConfig.tiny()).eval()


def make(model, **kwargs):
    kwargs.setdefault("obs_keys", ("representation", "viewpoint"))  # most tests are about r
    return gym.make("GQNMaze-v0", model=model, **{**SCENE, **kwargs})


def test_observation_space_is_derived_from_the_model(model):
    env = make(model)
    try:
        space = env.observation_space
        assert set(space.spaces) == {"representation", "viewpoint"}
        assert space["representation"].shape == (int(np.prod(model.config.representation_shape)),)
        obs, _ = env.reset(seed=0)
        assert space.contains(obs)
        assert obs["representation"].dtype == np.float32
    finally:
        env.close()


def test_the_old_view_key_still_works_with_a_deprecation_warning(model):
    """``view`` was renamed ``view_encoding``; for one release the old name is observed as asked."""
    with pytest.warns(DeprecationWarning, match="'view' is now 'view_encoding'"):
        old = make(model, obs_keys=("view", "viewpoint"))
    new = make(model, obs_keys=("view_encoding", "viewpoint"))
    try:
        assert set(old.observation_space.spaces) == {"view", "viewpoint"}
        assert old.observation_space["view"] == new.observation_space["view_encoding"]
        old_obs, _ = old.reset(seed=0)
        new_obs, _ = new.reset(seed=0)
        np.testing.assert_array_equal(old_obs["view"], new_obs["view_encoding"])
        assert old.observation_space.contains(old_obs)
    finally:
        old.close()
        new.close()
    with pytest.raises(ValueError, match="distinct"):  # both names of one key
        make(model, obs_keys=("view", "view_encoding"))


def test_check_env_passes_with_a_frozen_model(model):
    env = make(model, obs_keys=("representation", "viewpoint", "image"), image_size=48)
    try:
        gym_check_env(env, skip_render_check=True)
        sb3_check_env(env, warn=True)
    finally:
        env.close()


def test_one_encoder_pass_per_step_and_running_sum(model):
    env = make(model, scale="sum", obs_keys=("representation", "view_encoding", "viewpoint"))
    calls = []
    hook = model.representation.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    state = env.get_wrapper_attr("state")
    numpy_encoder = state._numpy_encoder  # the per-step path of a patch network on the CPU
    assert numpy_encoder is not None
    state._numpy_encoder = lambda images, viewpoints, **kw: (
        calls.append(len(images)) or numpy_encoder(images, viewpoints, **kw)
    )
    try:
        obs, _ = env.reset(seed=1)
        frames = [env.unwrapped.render_obs()]
        vps = [obs["viewpoint"]]
        for action in [2, 0, 2, 2]:
            obs, *_ = env.step(action)
            frames.append(env.unwrapped.render_obs())
            vps.append(obs["viewpoint"])
        assert calls == [1] * 5  # one frame encoded per reset/step, never the history
    finally:
        hook.remove()
        env.close()
    with torch.inference_mode():
        encodings = model.encode(np.stack(frames), np.stack(vps)).flatten(1).numpy()  # (T, size)
    np.testing.assert_allclose(obs["representation"], encodings.sum(0), rtol=1e-4, atol=1e-5)
    # "view_encoding" is the current frame's encoding alone: the last term of the sum.
    np.testing.assert_allclose(obs["view_encoding"], encodings[-1], rtol=1e-4, atol=1e-5)
    assert env.observation_space["view_encoding"].shape == obs["view_encoding"].shape


def test_mean_scale_divides_by_frames_seen(model):
    a, b = make(model, scale="mean"), make(model, scale="sum")
    try:
        a.reset(seed=2)
        b.reset(seed=2)
        for _ in range(3):
            oa, *_ = a.step(2)
            ob, *_ = b.step(2)
        np.testing.assert_allclose(oa["representation"] * 4, ob["representation"], rtol=1e-5, atol=1e-6)
    finally:
        a.close()
        b.close()


def test_same_seed_same_observations(model):
    a, b = make(model), make(model)
    try:
        oa, _ = a.reset(seed=3)
        ob, _ = b.reset(seed=3)
        for action in [2, 2, 1, 2]:
            np.testing.assert_array_equal(oa["representation"], ob["representation"])
            oa, *_ = a.step(action)
            ob, *_ = b.step(action)
    finally:
        a.close()
        b.close()


def test_a_model_trained_on_top_down_queries_renders_its_imagined_map_and_uncertainty(model):
    from gqn_env.envs.viewpoint import TOP_DOWN_VIEWPOINT
    from gqn_env.wrappers.imagination import SPREAD_SCALE, heat

    torch.manual_seed(0)
    top_model = GQN(GQNConfig.tiny().replace(top_down_fraction=0.25)).eval()
    plain, top = make(model, render_mode="rgb_array"), make(top_model, render_mode="rgb_array")
    try:
        plain.reset(seed=0)
        top.reset(seed=0)
        assert not plain.get_wrapper_attr("knows_top_down") and top.get_wrapper_attr("knows_top_down")
        panel = 64 + 4  # map_size 64 and the gap
        assert plain.render().shape[1] == 3 * panel - 4
        assert top.render().shape[1] == 5 * panel - 4  # + imagined map + its uncertainty
        mean, spread = top.get_wrapper_attr("imagine_top_down")(samples=3)
        np.testing.assert_array_equal(mean, top.get_wrapper_attr("imagine")(TOP_DOWN_VIEWPOINT))
        assert spread.shape == mean.shape[:2] and spread.min() >= 0 and spread.max() > 0  # samples differ
        np.testing.assert_array_equal(spread, top.get_wrapper_attr("imagine_top_down")(samples=3)[1])  # seeded
        assert (heat(np.array([[0.0, SPREAD_SCALE]]), SPREAD_SCALE) == [[[0, 0, 0], [255, 255, 255]]]).all()
    finally:
        plain.close()
        top.close()


def test_imagine_and_render(model):
    env = make(model, render_mode="rgb_array")
    try:
        _, info = env.reset(seed=0)
        imagine = env.get_wrapper_attr("imagine")
        img = imagine(info["pose"])
        assert img.shape == (model.config.image_size, model.config.image_size, 3) and img.dtype == np.uint8
        np.testing.assert_array_equal(img, imagine(info["viewpoint"]))  # pose and viewpoint agree
        frame = env.render()
        assert frame.ndim == 3 and frame.shape[1] > 3 * 64  # three labelled panels
        with pytest.raises(ValueError, match="finite"):
            imagine(np.full(7, np.nan))
        with pytest.raises(ValueError, match=r"in \[-1, 1\]"):
            imagine([5.0] * 7)
        with pytest.raises(ValueError, match="outside the maze"):
            imagine([1e6, 1e6, 0.0])
        with pytest.raises(ValueError, match="imagine\\(\\) takes"):
            imagine({"x": 1})
    finally:
        env.close()


def _spy_on_scene_constructor(monkeypatch) -> list:
    """Count GQNMazeScene constructions (the constructor opens OpenGL)."""
    built = []
    original = maze_scene.GQNMazeScene.__init__

    @functools.wraps(original)  # keeps the signature, which the scene's argument check reads
    def spy(self, *args, **kwargs):
        built.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(maze_scene.GQNMazeScene, "__init__", spy)
    return built


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"obs_keys": ("representation", "depth")}, "obs_keys"),
        ({"obs_keys": ()}, "obs_keys"),
        ({"scale": "max"}, "scale"),
        ({"image_size": 20}, "multiple"),
        ({"model": "not a model"}, r"model must be a world_model.GQN, got str 'not a model'; .* checkpoint="),
        ({"model": 3}, "model must be a world_model.GQN"),
        ({"checkpoint": 3}, "checkpoint must be a path"),
        ({"domain_rand": "yes"}, "domain_rand must be True or False"),
        ({"emit_frames": "yes"}, "emit_frames must be True or False"),
        ({"num_rows": 0}, "num_rows must be an integer in 1..16"),
        ({"room_size": -1.0}, "room_size"),
        ({"device": "nonsense"}, "device must name a torch device"),
    ],
)
def test_bad_kwargs_raise_before_the_scene_is_built(model, kwargs, match, monkeypatch):
    built = _spy_on_scene_constructor(monkeypatch)
    with pytest.raises(ValueError, match=match):
        if {"model", "checkpoint"} & set(kwargs):
            gym.make("GQNMaze-v0", **{**SCENE, **kwargs})
        else:
            make(model, **kwargs)
    assert not built


def test_bad_obs_keys_with_the_bundled_model_raise_before_the_scene_is_built(monkeypatch):
    built = _spy_on_scene_constructor(monkeypatch)
    with pytest.raises(ValueError, match=r"obs_keys must be distinct names from .*got \('nope',\)"):
        gym.make("GQNMaze-v0", obs_keys=("nope",))
    assert not built


def test_unknown_kwarg_is_reported_against_gqn_maze_with_the_accepted_names(model):
    with pytest.raises(TypeError, match=r"GQNMaze got unexpected keyword argument\(s\) \['colour'\]") as err:
        make(model, colour="red")
    assert "MiniWorldEnv" not in str(err.value)
    assert all(name in str(err.value) for name in ("obs_keys", "model", "checkpoint", "room_size", "domain_rand"))


def test_the_scene_is_closed_when_the_wrapper_cannot_be_built(model, monkeypatch):
    closed = []
    close = maze_scene.GQNMazeScene.close
    monkeypatch.setattr(maze_scene.GQNMazeScene, "close", lambda self: closed.append(1) or close(self))

    def fail(*args, **kwargs):
        raise RuntimeError("wrapper failed")

    monkeypatch.setattr(representation.GQNRepresentation, "__init__", fail)
    with pytest.raises(RuntimeError, match="wrapper failed"):
        make(model)
    assert closed == [1]


def test_patches_are_the_current_frames_per_patch_features(model):
    env = make(model, obs_keys=("patches", "view_encoding"), image_size=32)  # frames block-averaged to the model's 16
    plain = make(model, obs_keys=("view_encoding",), image_size=32)
    try:
        grid = model.representation.grid
        assert env.observation_space["patches"].shape == (model.config.model.patch_channels, grid, grid)
        obs, _ = env.reset(seed=4)
        plain_obs, _ = plain.reset(seed=4)
        for action in (2, 0, 2):
            state = env.unwrapped  # the scene: its last image is what the wrapper just encoded
            image = state.render_obs()
            small = image.reshape(16, 2, 16, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8)
            x = torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255
            with torch.no_grad():
                expected = model.representation.patch_map(x)[0].permute(2, 0, 1).numpy()  # (c, g, g)
            np.testing.assert_allclose(obs["patches"], expected, rtol=1e-4, atol=1e-5)
            # The pooled encoding is the same with or without the patch map.
            np.testing.assert_allclose(obs["view_encoding"], plain_obs["view_encoding"], rtol=1e-5, atol=1e-6)
            obs, *_ = env.step(action)
            plain_obs, *_ = plain.step(action)
    finally:
        env.close()
        plain.close()


def test_patches_need_a_patch_representation():
    tower = GQN(GQNConfig.tiny().replace(representation="pool"))
    for key in ("patches", "recall", "landmarks"):
        with pytest.raises(ValueError, match=f"'{key}' observation needs a model with the 'patch'"):
            make(tower, obs_keys=(key,))


def _viewpoint(yaw, x=0.0):
    return np.array([x, 0.0, 0.0, np.cos(yaw), np.sin(yaw), 1.0, 0.0], dtype=np.float32)


def test_recall_returns_the_maps_of_the_frames_seen_left_behind_and_right(model):
    """Frames facing four ways from one spot: each recall query finds the frame that faced its way."""
    state = representation.RepresentationState(model, 1, recall=True)
    rng = np.random.default_rng(0)
    size = model.config.image_size
    images = rng.integers(0, 256, (5, size, size, 3), dtype=np.uint8)
    # Facing +90, 180, -90 and 0 degrees, then 0 degrees again a little further on (the current frame).
    yaws = [np.pi / 2, np.pi, -np.pi / 2, 0.0, 0.0]
    for i, yaw in enumerate(yaws):
        state.add_one(0, images[i], _viewpoint(yaw, x=0.05 * (i == 4)), reset=i == 0)
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        per_frame = model.representation.patch_map(x).permute(0, 3, 1, 2).numpy()  # (5, c, g, g)
    c = per_frame.shape[1]
    recalled = state.recall(0)
    assert recalled.shape == (len(representation.RECALL_TURNS) * c, *per_frame.shape[2:])
    for i, frame in enumerate((0, 1, 2)):  # left = the +90 frame, behind = 180, right = -90
        np.testing.assert_allclose(recalled[i * c : (i + 1) * c], per_frame[frame], rtol=1e-4, atol=1e-5)
    # Turning the current heading by 90 degrees turns what is left, behind and right of it.
    state.add_one(0, images[0], _viewpoint(np.pi / 2, x=0.05), reset=False)
    turned = state.recall(0)
    np.testing.assert_allclose(turned[:c], per_frame[1], rtol=1e-4, atol=1e-5)  # left of +90 is 180
    np.testing.assert_allclose(turned[2 * c :], per_frame[4], rtol=1e-4, atol=1e-5)  # right of +90: 0, at x=0.05
    # A new episode forgets: with one frame, every query answers with it.
    state.add_one(0, images[4], _viewpoint(0.0), reset=True)
    np.testing.assert_allclose(state.recall(0), np.concatenate([per_frame[4]] * 3), rtol=1e-4, atol=1e-5)


def _one_hot_map(c, g, channel, row, column, value):
    maps = np.zeros((1, c, g, g), dtype=np.float32)
    maps[0, channel, row, column] = value
    return maps


def test_landmarks_remember_where_each_channel_peaked_in_the_agent_frame():
    """A channel's peak is kept with the viewpoint it was seen from, re-expressed as the agent moves and turns."""
    c, g = 3, 4
    memory = representation.Landmarks(1, c)
    fields = {name: i for i, name in enumerate(representation.LANDMARK_FIELDS)}

    def observed():
        return memory.observe(np.array([0]))[0]

    # Channel 1 peaks (0.9) at row 3, column 0 while the agent stands at x=0 facing +x (yaw 0).
    memory.update(0, _one_hot_map(c, g, 1, 3, 0, 0.9), _viewpoint(0.0)[None], reset=True)
    # A weaker response later, from elsewhere, is not remembered in its place.
    memory.update(0, _one_hot_map(c, g, 1, 0, 2, 0.5), _viewpoint(np.pi, x=0.4)[None], reset=False)
    lm = observed()[1]
    assert lm[fields["peak"]] == pytest.approx(0.9)
    assert (lm[fields["column"]], lm[fields["row"]]) == pytest.approx((-0.375, 0.375))
    # The agent now stands at x=0.4 facing -x: the sighting spot is 0.4 ahead, and its heading was behind it.
    assert (lm[fields["forward"]], lm[fields["right"]]) == pytest.approx((0.4, 0.0), abs=1e-6)
    assert (lm[fields["cos_turn"]], lm[fields["sin_turn"]]) == pytest.approx((-1.0, 0.0), abs=1e-6)
    # Turned to face +z (yaw -90 degrees: a right turn from +x), the spot (-0.4 in x) is on its right.
    memory.update(0, _one_hot_map(c, g, 0, 0, 0, 0.1), _viewpoint(-np.pi / 2, x=0.4)[None], reset=False)
    lm = observed()[1]
    assert (lm[fields["forward"]], lm[fields["right"]]) == pytest.approx((0.0, 0.4), abs=1e-6)
    assert (lm[fields["cos_turn"]], lm[fields["sin_turn"]]) == pytest.approx((0.0, 1.0), abs=1e-6)
    # A strictly stronger response replaces the memory; a new episode forgets it.
    memory.update(0, _one_hot_map(c, g, 1, 1, 1, 1.5), _viewpoint(0.0, x=0.2)[None], reset=False)
    assert observed()[1, fields["peak"]] == pytest.approx(1.5)
    memory.update(0, _one_hot_map(c, g, 2, 0, 0, 0.3), _viewpoint(0.0)[None], reset=True)
    assert observed()[:, fields["peak"]] == pytest.approx([0.0, 0.0, 0.3])


def test_landmarks_of_a_walk_match_its_maps_and_survive_refresh(model):
    """The observation's peaks are the maxima of the patch maps seen; re-encoding the episode keeps them."""
    env = make(model, obs_keys=("landmarks", "patches", "viewpoint"))
    try:
        obs, _ = env.reset(seed=5)
        maps = [obs["patches"]]
        for action in (2, 2, 0, 2, 1, 2):
            obs, *_ = env.step(action)
            maps.append(obs["patches"])
        c = maps[0].shape[0]
        width = len(representation.LANDMARK_FIELDS)
        assert env.observation_space["landmarks"].shape == obs["landmarks"].shape == (c, width)
        peaks = obs["landmarks"][:, 0]
        np.testing.assert_allclose(peaks, np.stack(maps).max(axis=(0, 2, 3)), rtol=1e-6)
        before = obs["landmarks"].copy()
        env.get_wrapper_attr("refresh")()
        after = env.get_wrapper_attr("current_observation")()["landmarks"]
        np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-5)
    finally:
        env.close()


def test_motion_is_the_last_move_in_the_agent_frame_and_flags_a_blocked_one():
    fields = {name: i for i, name in enumerate(representation.MOTION_FIELDS)}
    # Facing +z (yaw -90 degrees), a step of 0.1 along +z is forward; along +x it is to the left.
    facing_z = _viewpoint(-np.pi / 2)
    ahead = facing_z.copy()
    ahead[2] += 0.1
    assert representation.motion(facing_z, ahead) == pytest.approx([0.1, 0.0, 0.0, 0.0], abs=1e-6)
    aside = facing_z.copy()
    aside[0] += 0.1
    assert representation.motion(facing_z, aside)[fields["right"]] == pytest.approx(-0.1, abs=1e-6)
    turned = representation.motion(facing_z, _viewpoint(-np.pi / 2 + np.radians(15)))
    assert turned == pytest.approx([0.0, 0.0, np.sin(np.radians(15)), 0.0], abs=1e-6)
    assert representation.motion(facing_z, facing_z.copy()) == pytest.approx([0.0, 0.0, 0.0, 1.0])


def test_motion_of_a_walk_zero_at_reset_then_each_move_and_the_blocked_ones(model):
    env = make(model, obs_keys=("motion", "viewpoint"))
    fields = {name: i for i, name in enumerate(representation.MOTION_FIELDS)}
    try:
        obs, _ = env.reset(seed=5)
        assert env.observation_space["motion"].shape == (len(fields),)
        np.testing.assert_array_equal(obs["motion"], 0.0)
        obs, *_ = env.step(0)  # turn left
        assert obs["motion"][fields["sin_turn"]] > 0 and obs["motion"][fields["still"]] == 0
        stills = []
        for _ in range(80):  # walk straight on: forward moves until a wall blocks them
            before = env.unwrapped.pose
            obs, *_ = env.step(2)
            moved = env.unwrapped.pose != before
            assert obs["motion"][fields["still"]] == float(not moved)
            assert (obs["motion"][fields["forward"]] > 0) == moved
            stills.append(not moved)
        assert stills[-1], "80 steps straight on should end against a wall"
        env.reset(seed=6)
        np.testing.assert_array_equal(env.get_wrapper_attr("current_observation")()["motion"], 0.0)
    finally:
        env.close()


def test_batched_vector_wrapper_matches_single_envs(model):
    n = 2
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("GQNMazeScene-v0", image_size=16, **SCENE) for _ in range(n)])
    keys = ("representation", "view_encoding", "patches", "recall", "landmarks", "motion", "viewpoint")
    vec = GQNRepresentationVector(envs, model, obs_keys=keys)
    singles = [
        GQNRepresentation(gym.make("GQNMazeScene-v0", image_size=16, **SCENE).unwrapped, model, obs_keys=keys)
        for _ in range(n)
    ]
    try:
        obs, _ = vec.reset(seed=10)
        single_obs = [s.reset(seed=10 + i)[0] for i, s in enumerate(singles)]
        for step in range(4):
            for i in range(n):
                for key in ("representation", "view_encoding", "patches", "recall", "landmarks", "motion"):
                    np.testing.assert_allclose(obs[key][i], single_obs[i][key], rtol=1e-4, atol=1e-5)
            actions = np.array([2, step % 3])
            obs, *_ = vec.step(actions)
            single_obs = [s.step(int(a))[0] for s, a in zip(singles, actions, strict=True)]
    finally:
        vec.close()
        for s in singles:
            s.close()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, model):
    from world_model import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, {"config": model.config.to_dict(), "model": model.state_dict(), "step": 0})
    return str(path)


def _make_from_checkpoint(path):
    # The "gqn_env:" prefix makes a fresh worker process import gqn_env (registering the ids).
    return lambda: gym.make("gqn_env:GQNMaze-v0", checkpoint=path, **SCENE)


@pytest.mark.slow
def test_async_vector_env_with_forkserver(tiny_checkpoint):
    """The default observation (patches, view, viewpoint) under Gymnasium's process-based vector env."""
    envs = gym.vector.AsyncVectorEnv([_make_from_checkpoint(tiny_checkpoint)] * 2, context="forkserver")
    try:
        obs, _ = envs.reset(seed=0)
        assert set(obs) == set(gqn_maze.DEFAULT_OBS_KEYS)
        assert obs["view_encoding"].shape == (2, GQNConfig.tiny().representation_dim)
        for _ in range(3):
            obs, *_ = envs.step(np.array([2, 0]))
        assert all(np.all(np.isfinite(v)) for v in obs.values())
        # Sub-env 0 matches a single env in this process with the same seed and actions.
        single = gym.make("GQNMaze-v0", checkpoint=tiny_checkpoint, **SCENE)
        single.reset(seed=0)
        for _ in range(3):
            ref, *_ = single.step(2)
        for key in gqn_maze.DEFAULT_OBS_KEYS:
            np.testing.assert_allclose(obs[key][0], ref[key], rtol=1e-5, atol=1e-6)
        single.close()
    finally:
        envs.close()


@pytest.mark.slow
def test_sb3_subproc_and_dummy_vec_env(tiny_checkpoint):
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    grid = GQN(GQNConfig.tiny()).representation.grid
    for cls in (DummyVecEnv, SubprocVecEnv):
        venv = cls([_make_from_checkpoint(tiny_checkpoint)] * 2)
        try:
            venv.seed(1)
            obs = venv.reset()
            obs, rewards, dones, infos = venv.step(np.array([2, 2]))
            assert obs["patches"].shape == (2, GQNConfig.tiny().model.patch_channels, grid, grid)
            assert obs["view_encoding"].shape == (2, GQNConfig.tiny().representation_dim)
            assert "pose" in infos[0]
        finally:
            venv.close()


def test_default_observation_is_patches_view_encoding_viewpoint_or_without_patches(model):
    env = gym.make("GQNMaze-v0", model=model, **SCENE)
    pool = gym.make("GQNMaze-v0", model=GQN(GQNConfig.tiny().replace(representation="pool")), **SCENE)
    try:
        expected = ("patches", "view_encoding", "viewpoint")
        assert tuple(env.observation_space.spaces) == gqn_maze.DEFAULT_OBS_KEYS == expected
        assert tuple(pool.observation_space.spaces) == gqn_maze.DEFAULT_OBS_KEYS_NO_PATCHES
        obs, _ = env.reset(seed=0)
        assert env.observation_space.contains(obs)
    finally:
        env.close()
        pool.close()


def test_default_gqn_maze_uses_the_bundled_model():
    """`gym.make("GQNMaze-v0")` works in a plain session, with the shipped checkpoint."""
    import subprocess
    import sys

    code = (
        "import gymnasium as gym, gqn_env\n"
        "env = gym.make('GQNMaze-v0')\n"
        "obs, info = env.reset(seed=0)\n"
        "obs, *_ = env.step(2)\n"
        "print(sorted(obs), obs['view_encoding'].shape, env.get_wrapper_attr('imagine')(info['pose']).shape)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    from gqn_env.envs.gqn_maze import load_world_model

    config = load_world_model().config
    size = config.image_size
    keys = "['patches', 'view_encoding', 'viewpoint']"
    assert f"{keys} ({config.r_channels},) ({size}, {size}, 3)" in result.stdout  # the map head's are not observed


def test_the_bundled_model_imagines_the_map_and_render_shows_it():
    """The shipped model was trained on top-down queries: render() (and so the demo) has the map panels."""
    env = gym.make("GQNMaze-S2-v0", render_mode="rgb_array", map_size=64)
    try:
        env.reset(seed=0)
        assert env.get_wrapper_attr("knows_top_down")
        assert env.render().shape[1] == 5 * (64 + 4) - 4  # true, imagined, map, imagined map, its uncertainty
    finally:
        env.close()


def test_bundled_gqn_maze_passes_check_env_and_is_deterministic():
    env, twin = gym.make("GQNMaze-S2-v0"), gym.make("GQNMaze-S2-v0")
    try:
        gym_check_env(env, skip_render_check=True)
        sb3_check_env(env, warn=True)
        a, _ = env.reset(seed=5)
        b, _ = twin.reset(seed=5)
        for action in [2, 2, 0, 2]:
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])
            a, *_ = env.step(action)
            b, *_ = twin.step(action)
    finally:
        env.close()
        twin.close()


def test_imagination_scales_long_episodes_into_the_trained_context_range(model):
    from gqn_env.wrappers.representation import RepresentationState

    k = model.config.context_max
    rng = np.random.default_rng(0)
    s = model.config.image_size
    images = rng.integers(0, 256, (3 * k, s, s, 3), dtype=np.uint8)
    vps = rng.uniform(-1, 1, (3 * k, 7)).astype(np.float32)
    state = RepresentationState(model, 1)
    query = vps[:2]
    for i in range(3 * k):
        state.add_one(0, images[i], vps[i], reset=i == 0)
        if i == k - 2:  # fewer than context_max frames: the plain sum
            r = torch.from_numpy(state.sums[:1]).expand(2, -1, -1, -1)
            want = model.render(r, query, generator=torch.Generator().manual_seed(3), sample=True)
            got = state.imagine(0, query, seed=3, sample=True)
            np.testing.assert_array_equal(got, (want.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy())
    mean = state.sums[:1] / (3 * k)
    direct = model.encode(images, vps).detach().sum(0).numpy() / (3 * k)  # (C, h, w)
    np.testing.assert_allclose(mean[0], direct, rtol=1e-5, atol=1e-6)
    r = torch.from_numpy(mean * k).expand(2, -1, -1, -1)
    want = model.render(r, query, generator=torch.Generator().manual_seed(3), sample=True)
    got = state.imagine(0, query, seed=3, sample=True)
    np.testing.assert_array_equal(got, (want.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy())


def test_refresh_re_encodes_the_episode_with_new_weights(model):
    import copy

    own = copy.deepcopy(model)
    env = make(own, scale="sum", obs_keys=("representation", "view_encoding"))
    try:
        env.reset(seed=4)
        for action in [2, 1, 2]:
            env.step(action)
        wrapper = env.get_wrapper_attr("refresh").__self__
        episode = wrapper.state.episodes[0]
        images, vps = np.stack(episode.images), np.stack(episode.viewpoints)
        with torch.no_grad():
            for p in own.parameters():
                p.add_(0.05)  # a world-model update
        before = wrapper.current_observation()
        wrapper.refresh()
        after = wrapper.current_observation()
        with torch.inference_mode():
            encodings = own.encode(images, vps).flatten(1).numpy()
        assert not np.allclose(before["representation"], after["representation"])
        np.testing.assert_allclose(after["representation"], encodings.sum(0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(after["view_encoding"], encodings[-1], rtol=1e-4, atol=1e-5)
        assert wrapper.frames_seen == 4
    finally:
        env.close()


def test_a_view_model_imagines_from_the_episode_frame_nearest_the_pose():
    from gqn_env.wrappers.representation import RepresentationState

    torch.manual_seed(0)
    model = GQN(GQNConfig.tiny().replace(view_channels=4)).eval()
    rng = np.random.default_rng(0)
    s = model.config.image_size
    images = rng.integers(0, 256, (6, s, s, 3), dtype=np.uint8)
    vps = rng.uniform(-1, 1, (6, 7)).astype(np.float32)
    state = RepresentationState(model, 2)
    state.add(np.array([0, 1]), images[:2], vps[:2], reset=np.array([True, True]))
    for i in range(2, 6):  # slot 0 gets every other frame, then a new episode starts in slot 1
        state.add_one(i % 2, images[i], vps[i], reset=i == 3)
    assert [len(e) for e in state.episodes] == [3, 2]
    query = vps[[4, 2]] + 0.01
    r = torch.from_numpy(state.sums[:1]).expand(2, -1, -1, -1)
    # The imagined views are those rendered with the frames nearest the queries as the context.
    want = model.render(r, query, context=(images[None, [4, 2]], vps[None, [4, 2]]))
    got = state.imagine(0, query)
    np.testing.assert_array_equal(got, (want.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy())
    np.testing.assert_array_equal(np.stack(state.episodes[0].images), images[[0, 2, 4]])
    np.testing.assert_array_equal(np.stack(state.episodes[1].viewpoints), vps[[3, 5]])
    # In the env: imagine and the render panel work, and a reset forgets the last episode's frames.
    env = make(model, render_mode="rgb_array")
    try:
        _, info = env.reset(seed=0)
        poses = [info["pose"]]
        for _ in range(3):
            poses.append(env.step(2)[-1]["pose"])
        scene = env.unwrapped
        episode = env.get_wrapper_attr("state").episodes[0]
        assert len(episode) == 4  # the state holds exactly the frames seen this episode
        for image, viewpoint, pose in zip(episode.images, episode.viewpoints, poses, strict=True):
            np.testing.assert_array_equal(image, scene.render_view(pose))
            np.testing.assert_allclose(viewpoint, scene.viewpoint(Pose.from_array(pose)), atol=1e-6)
        assert env.render().ndim == 3
        assert env.get_wrapper_attr("imagine")([1.0, 1.0, 0.0]).shape == (s, s, 3)
        env.reset(seed=1)
        assert len(env.get_wrapper_attr("state").episodes[0]) == 1
    finally:
        env.close()

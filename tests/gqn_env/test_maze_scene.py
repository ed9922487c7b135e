from __future__ import annotations

import ctypes
import math
import os
import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import gqn_env
from gqn_env.envs import maze_scene
from gqn_env.envs.viewpoint import Pose, pose_to_viewpoint, viewpoint_to_pose


@pytest.mark.parametrize("env_id", gqn_env.scene_ids())
def test_check_env_every_registered_id(env_id):
    env = gym.make(env_id, image_size=40, map_size=64)
    try:
        gym_check_env(env.unwrapped, skip_render_check=False)
        sb3_check_env(env.unwrapped, warn=True)
    finally:
        env.close()


def test_make_with_module_prefix():
    env = gym.make("gqn_env:GQNMazeScene-S2-v0", image_size=16)
    try:
        obs, _ = env.reset(seed=0)
        assert obs["image"].shape == (16, 16, 3)
    finally:
        env.close()


def test_observation_layout_and_nonsquare_image(make_scene):
    env = make_scene(image_size=(24, 40))
    obs, info = env.reset(seed=3)
    assert obs["image"].dtype == np.uint8 and obs["image"].shape == (24, 40, 3)
    assert obs["viewpoint"].dtype == np.float32 and obs["viewpoint"].shape == (7,)
    assert env.observation_space.contains(obs)
    assert set(info) >= {"pose", "viewpoint", "is_success"}
    # Frames are not blank: across a few poses, walls, floors and objects differ.
    rng = np.random.default_rng(0)
    views = np.stack([env.unwrapped.render_view(env.unwrapped.sample_free_pose(rng)) for _ in range(8)])
    assert views.shape == (8, 24, 40, 3)
    assert views.std() > 10


def _rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    frames = [obs["image"].copy()]
    for a in actions:
        obs, *_ = env.step(a)
        frames.append(obs["image"].copy())
    return np.stack(frames)


def test_same_seed_same_scene_and_frames_lockstep(make_scene):
    actions = np.random.default_rng(0).integers(0, 3, size=40)
    a, b = make_scene(), make_scene()
    # Interleave the two envs in one process: each must keep its own scene.
    a.reset(seed=11)
    b.reset(seed=11)
    for act in actions:
        oa, ra, ta, tra, ia = a.step(act)
        ob, rb, tb, trb, ib = b.step(act)
        np.testing.assert_array_equal(oa["image"], ob["image"])
        np.testing.assert_array_equal(ia["pose"], ib["pose"])
        assert (ra, ta, tra) == (rb, tb, trb)


def test_two_scenes_in_one_process_do_not_share_geometry(make_scene):
    """A second env's reset must not change what the first env renders."""
    actions = [2, 0, 2, 2, 1, 2]
    alone = make_scene()
    reference = _rollout(alone, 5, actions)
    a, b = make_scene(), make_scene()
    a.reset(seed=5)
    b.reset(seed=6)  # a different scene built after a's
    frames = [a.unwrapped.render_obs()]
    for act in actions:
        frames.append(a.step(act)[0]["image"])
    np.testing.assert_array_equal(np.stack(frames), reference)


def test_different_seeds_give_different_scenes(make_scene):
    env = make_scene()
    img0 = env.reset(seed=1)[0]["image"]
    img1 = env.reset(seed=2)[0]["image"]
    assert not np.array_equal(img0, img1)


def test_render_view_leaves_env_untouched(make_scene):
    env, twin = make_scene(), make_scene()
    obs, info = env.reset(seed=4)
    twin.reset(seed=4)
    scene = env.unwrapped
    rng = np.random.default_rng(0)
    for _ in range(5):
        view = scene.render_view(scene.sample_free_pose(rng))
        assert view.shape == obs["image"].shape
        scene.render_view(scene.sample_free_pose(rng), image_size=48)
    np.testing.assert_array_equal(scene.render_obs(), obs["image"])
    np.testing.assert_array_equal(scene.pose.as_array(), info["pose"])
    assert len(scene.entities) == len(twin.unwrapped.entities)
    for act in [2, 2, 0, 2, 1, 2]:
        o1, r1, t1, tr1, i1 = env.step(act)
        o2, r2, t2, tr2, i2 = twin.step(act)
        np.testing.assert_array_equal(o1["image"], o2["image"])
        np.testing.assert_array_equal(i1["pose"], i2["pose"])


def test_render_view_at_agent_pose_equals_observation(make_scene):
    env = make_scene()
    obs, info = env.reset(seed=8)
    view = env.unwrapped.render_view(info["pose"])
    np.testing.assert_array_equal(view, obs["image"])


def test_sample_free_pose_is_collision_free_and_inside_a_room(make_scene):
    env = make_scene(objects_per_room=3)
    env.reset(seed=2)
    scene = env.unwrapped
    rng = np.random.default_rng(1)
    radius = scene.agent.radius
    for _ in range(200):
        pose = scene.sample_free_pose(rng)
        pos = np.array([pose.x, 0.0, pose.z])
        assert not scene.intersect(scene.agent, pos, radius)
        assert any(
            r.min_x + radius <= pose.x <= r.max_x - radius and r.min_z + radius <= pose.z <= r.max_z - radius
            for r in scene.grid_rooms
        )
        for ent in scene.entities:
            if ent is not scene.agent:
                assert np.hypot(ent.pos[0] - pose.x, ent.pos[2] - pose.z) >= ent.radius + radius


def test_viewpoint_matches_pose(make_scene):
    env = make_scene()
    obs, info = env.reset(seed=9)
    scene = env.unwrapped
    for act in [0, 2, 2, 1, 2, 0, 0, 2]:
        obs, _, _, _, info = env.step(act)
        x, z, yaw, pitch = info["pose"]
        b = scene.bounds
        vp = obs["viewpoint"]
        np.testing.assert_array_equal(vp, info["viewpoint"])
        assert vp[0] == pytest.approx(2 * (x - b.min_x) / (b.max_x - b.min_x) - 1, abs=1e-6)
        assert vp[2] == pytest.approx(2 * (z - b.min_z) / (b.max_z - b.min_z) - 1, abs=1e-6)
        assert vp[1] == pytest.approx(2 * 1.5 / b.wall_height - 1, abs=1e-6)
        np.testing.assert_allclose(vp[3:], [math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)], atol=1e-6)
        # MiniWorld's dir_vec is (cos, 0, -sin): yaw matches the agent's heading.
        np.testing.assert_allclose(scene.agent.dir_vec[[0, 2]], [math.cos(yaw), -math.sin(yaw)], atol=1e-6)
        back = viewpoint_to_pose(vp, b)
        assert (back.x, back.z) == pytest.approx((x, z), abs=1e-4)
        assert math.cos(back.yaw - yaw) == pytest.approx(1.0, abs=1e-6)


def test_viewpoint_of_pose_is_bounded_and_rejects_nan(make_scene):
    env = make_scene()
    env.reset(seed=0)
    b = env.unwrapped.bounds
    vp = pose_to_viewpoint(Pose(b.min_x, b.max_z, math.pi / 2), b, 1.5)
    assert vp[0] == -1.0 and vp[2] == 1.0 and vp[4] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="finite"):
        Pose(float("nan"), 0.0, 0.0)
    with pytest.raises(ValueError, match="finite"):
        viewpoint_to_pose(np.array([0, 0, 0, 1, 0, 1, np.inf]), b)


def test_reaching_the_goal_terminates_with_success(make_scene):
    env = make_scene()
    env.reset(seed=1)
    scene = env.unwrapped
    goal = scene.goal
    scene.agent.pos = goal.pos + np.array([goal.radius + scene.agent.radius + 0.05, 0.0, 0.0])
    _, reward, terminated, truncated, info = env.step(0)  # turning: the agent stays near the goal
    assert terminated and not truncated and info["is_success"]
    assert 0.8 <= reward <= 1.0


def test_episode_truncates_at_step_limit(make_scene):
    env = make_scene(max_episode_steps=5)
    env.reset(seed=0)
    for i in range(5):
        _, _, terminated, truncated, _ = env.step(0)  # turning in place never reaches the goal
        assert not terminated
        assert truncated == (i == 4)


def test_pickle_round_trip(make_scene):
    env = make_scene()
    clone = pickle.loads(pickle.dumps(env.unwrapped))
    try:
        o1, _ = env.reset(seed=3)
        o2, _ = clone.reset(seed=3)
        np.testing.assert_array_equal(o1["image"], o2["image"])
    finally:
        clone.close()


def test_render_map_and_rgb_array_render(make_scene):
    env = make_scene(render_mode="rgb_array", map_size=96)
    env.reset(seed=0)
    top = env.unwrapped.render_map()
    assert top.shape == (96, 96, 3) and top.dtype == np.uint8 and top.std() > 5
    frame = env.render()
    assert frame.shape == (96, 96, 3)


def test_render_camera_top_renders_the_map_and_view_is_its_deprecated_name(make_scene):
    agent = make_scene(render_mode="rgb_array", map_size=64)
    top = make_scene(render_mode="rgb_array", map_size=64, render_camera="top")
    with pytest.warns(DeprecationWarning, match="view= argument is now render_camera="):
        old = make_scene(render_mode="rgb_array", map_size=64, view="top")
    for env in (agent, top, old):
        env.reset(seed=0)
    np.testing.assert_array_equal(top.render(), top.unwrapped.render_map())
    np.testing.assert_array_equal(old.render(), top.render())
    assert not np.array_equal(agent.render(), top.render())
    assert old.unwrapped.view == "top"  # MiniWorld's own attribute, which its human window reads
    with pytest.raises(TypeError, match="not both"):
        make_scene(render_camera="top", view="top")


def test_the_top_down_viewpoint_is_the_same_for_the_envs_and_the_trainer():
    from gqn_env.envs.viewpoint import TOP_DOWN_VIEWPOINT
    from world_model.frames import TOP_DOWN_VIEWPOINT as TRAINER_TOP_DOWN
    from world_model.frames import is_top_down

    np.testing.assert_array_equal(TOP_DOWN_VIEWPOINT, TRAINER_TOP_DOWN)
    assert is_top_down(TOP_DOWN_VIEWPOINT) and np.abs(TOP_DOWN_VIEWPOINT).max() <= 1


def test_render_top_down_shows_the_maze_without_the_agent_and_changes_nothing(make_scene):
    env = make_scene(image_size=32)
    obs, _ = env.reset(seed=2)
    scene = env.unwrapped
    before = scene.render_top_down()
    assert before.shape == (32, 32, 3) and before.dtype == np.uint8 and before.std() > 5
    assert scene.render_top_down(48).shape == (48, 48, 3)
    for _ in range(6):  # the agent moves; the view from above does not show it
        obs, *_ = env.step(2)
    np.testing.assert_array_equal(scene.render_top_down(), before)
    np.testing.assert_array_equal(scene.render_obs(), obs["image"])  # the env's own frame is untouched
    other = make_scene(image_size=32)
    other.reset(seed=3)
    assert not np.array_equal(other.unwrapped.render_top_down(), before)  # another maze


def test_bad_step_action_raises(make_scene):
    env = make_scene()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="Invalid action"):
        env.unwrapped.step(7)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_rows": 0}, "num_rows"),
        ({"num_rows": 10**6}, "1..16"),
        ({"num_cols": 17}, "1..16"),
        ({"num_cols": -2}, "num_cols"),
        ({"num_rows": 2.5}, "num_rows"),
        ({"room_size": -1.0}, "room_size"),
        ({"room_size": float("nan")}, "room_size"),
        ({"room_size": 0.5}, "room_size"),
        ({"image_size": 0}, "image_size"),
        ({"image_size": (32, 0)}, "image_size"),
        ({"image_size": "64"}, "image_size"),
        ({"wall_textures": ["brick_wall", "no_such_texture"]}, "no_such_texture"),
        ({"floor_textures": []}, "floor_textures"),
        ({"objects_per_room": -1}, "objects_per_room"),
        ({"max_episode_steps": 0}, "max_episode_steps"),
        ({"render_mode": "ansi"}, "render_mode"),
        ({"domain_rand": "yes"}, "domain_rand must be True or False"),
        ({"map_size": 8}, "map_size"),
        ({"render_camera": "side"}, "render_camera"),
    ],
)
def test_bad_constructor_arguments_raise_value_error_before_opengl(kwargs, match, monkeypatch):
    opened = []  # MiniWorldEnv.__init__ opens the OpenGL context
    monkeypatch.setattr(maze_scene.MiniWorldEnv, "__init__", lambda *a, **k: opened.append(1))
    with pytest.raises(ValueError, match=match):
        gym.make("GQNMazeScene-S2-v0", **kwargs)
    assert not opened


def test_unknown_argument_is_reported_against_the_scene_with_the_accepted_names(monkeypatch):
    opened = []
    monkeypatch.setattr(maze_scene.MiniWorldEnv, "__init__", lambda *a, **k: opened.append(1))
    with pytest.raises(TypeError, match=r"GQNMazeScene\(\) got unexpected keyword argument\(s\) \['colour'\]") as err:
        gym.make("GQNMazeScene-S2-v0", colour="red")
    assert "MiniWorldEnv" not in str(err.value)
    assert all(name in str(err.value) for name in ("num_rows", "max_episode_steps", "domain_rand", "render_camera"))
    assert not opened


def _gl_objects(scene):
    """Display list, textures and depth buffers of every frame buffer the scene made (shared GL names)."""
    from pyglet import gl

    scene.shadow_window.switch_to()
    name = gl.GLint(0)
    textures, depths = [], []
    for fb in (scene.obs_fb, scene.vis_fb, *scene._view_fbs.values()):
        for fbo in (fb.multi_fbo, fb.final_fbo):
            gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, fbo)
            for attachment, out in ((gl.GL_COLOR_ATTACHMENT0, textures), (gl.GL_DEPTH_ATTACHMENT, depths)):
                gl.glGetFramebufferAttachmentParameteriv(
                    gl.GL_FRAMEBUFFER, attachment, gl.GL_FRAMEBUFFER_ATTACHMENT_OBJECT_NAME, ctypes.byref(name)
                )
                out.append(name.value)
    gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, 0)
    return scene._display_list, textures, depths


def test_close_deletes_the_scenes_gl_objects(make_scene):
    from pyglet import gl

    keeper, env = make_scene(), make_scene()  # keeper: a live context of the same share group to look from
    first, _ = keeper.reset(seed=0)
    env.reset(seed=0)
    scene = env.unwrapped
    scene.render_view(scene.pose, image_size=48)  # a frame buffer of another size
    display_list, textures, depths = _gl_objects(scene)
    assert display_list and len(textures) == len(depths) == 6 and all(textures) and all(depths)
    fbs = (scene.obs_fb, scene.vis_fb)
    env.close()
    env.close()  # twice is fine
    keeper.unwrapped.shadow_window.switch_to()
    assert not gl.glIsList(display_list)
    assert not any(gl.glIsTexture(t) for t in textures)
    assert not any(gl.glIsRenderbuffer(d) for d in depths)
    assert all(fbo.value == 0 for fb in fbs for fbo in (fb.multi_fbo, fb.final_fbo))
    with pytest.raises(RuntimeError, match="closed"):
        env.reset(seed=0)
    # The other env still renders its scene as before (the shared wall textures were left alone).
    again, _ = keeper.reset(seed=0)
    np.testing.assert_array_equal(again["image"], first["image"])


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the RSS from /proc")
def test_make_reset_close_cycles_do_not_grow_memory():
    def cycle(seed):
        env = gym.make("GQNMazeScene-S2-v0")  # default sizes: the 256x256 map frame buffer dominated the leak
        env.reset(seed=seed)
        env.close()

    for seed in range(3):
        cycle(seed)
    before = _rss_mib()
    for seed in range(20):
        cycle(seed)
    # Measured: +5.3 MiB a cycle before close() freed the GL objects (~106 MiB here), 0 after.
    assert _rss_mib() - before < 40


@pytest.mark.parametrize("name", ["white_1", "cardboard_4"])
def test_fast_texture_decoding_gives_pyglets_bytes(name):
    """The Pillow/numpy texture loader hands OpenGL the colours MiniWorld's pyglet path did."""
    import pyglet
    from miniworld.opengl import Texture
    from miniworld.utils import get_file_path

    from gqn_env.envs import _textures

    path = get_file_path("textures", name, "png")
    width, height, data = _textures.texture_rgba(path)
    img = pyglet.image.load(path)
    assert (width, height) == (img.width, img.height)
    ours = np.frombuffer(data, np.uint8).reshape(height, width, 4)
    theirs = np.frombuffer(img.get_image_data().get_data("RGBA", width * 4), np.uint8).reshape(height, width, 4)
    # RGB identical; alpha is not compared: pyglet fills it with a copy of red, and the
    # texture is uploaded with internal format GL_RGB, which drops alpha.
    np.testing.assert_array_equal(ours[..., :3], theirs[..., :3])
    assert Texture.load.__func__ is _textures._load  # installed by importing gqn_env

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from agents.collectors import FORWARD, Explorer, RandomWalker, Tee, collect, collect_vector, make_policy, walk
from gqn_env.envs.viewpoint import Pose
from tests.conftest import SMALL_SCENE
from world_model.frames import is_top_down


class ListSink:
    def __init__(self):
        self.ids, self.images, self.viewpoints = [], [], []

    def add_batch(self, scene_ids, images, viewpoints):
        self.ids.extend(np.asarray(scene_ids).tolist())
        self.images.extend(np.asarray(images))
        self.viewpoints.extend(np.asarray(viewpoints))


@pytest.mark.parametrize("policy", ["random", "explorer"])
def test_walk_frames_carry_the_right_viewpoints(make_scene, policy):
    env = make_scene()
    ep = walk(env, seed=3, steps=40, policy=make_policy(policy, np.random.default_rng(0)), frame_skip=2)
    scene = env.unwrapped
    assert ep.images.shape[1:] == (32, 32, 3) and ep.viewpoints.shape[1] == 7
    assert len(ep.images) == len(ep.viewpoints) == len(ep.poses) >= 2
    for image, viewpoint, pose in zip(ep.images, ep.viewpoints, ep.poses, strict=True):
        np.testing.assert_allclose(viewpoint, scene.viewpoint(Pose.from_array(pose)), atol=1e-6)
        # The stored frame is exactly what the camera sees from the stored pose.
        np.testing.assert_array_equal(image, scene.render_view(pose))


def test_collect_uses_seeds_as_scene_ids_and_is_deterministic(make_scene):
    env = make_scene()
    a, b = ListSink(), ListSink()
    n = collect(env, Tee(a), [7, 8], 20, RandomWalker(np.random.default_rng(1)), frame_skip=5)
    collect(env, b, [7, 8], 20, RandomWalker(np.random.default_rng(1)), frame_skip=5)
    assert n == len(a.ids) and sorted(set(a.ids)) == [7, 8]
    np.testing.assert_array_equal(np.stack(a.images), np.stack(b.images))


def test_collect_vector_assigns_a_new_scene_id_per_episode():
    envs = gym.vector.SyncVectorEnv(
        [lambda: gym.make("GQNMazeScene-v0", **{**SMALL_SCENE, "max_episode_steps": 6}) for _ in range(2)]
    )
    sink = ListSink()
    try:
        n = collect_vector(envs, sink, 14, [RandomWalker(np.random.default_rng(i)) for i in range(2)], seed=0)
    finally:
        envs.close()
    ids = np.array(sink.ids).reshape(-1, 2)  # (steps + 1, num_envs)
    assert n == ids.size
    # Episodes last 6 steps, then one autoreset step starts the next scene: 7 frames per scene.
    for col in range(2):
        _, counts = np.unique(ids[:, col], return_counts=True)
        assert counts.tolist() == [7, 7, 1]
    assert len(set(ids[:, 0]) & set(ids[:, 1])) == 0


def test_random_walker_rejects_bad_probabilities():
    with pytest.raises(ValueError, match="action_probs"):
        RandomWalker(np.random.default_rng(0), action_probs=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="Unknown policy"):
        make_policy("teleporter", np.random.default_rng(0))


def bumps_and_cells(env, policy, seed: int, steps: int = 150) -> tuple[int, int, int]:
    """Walk ``policy``: (forward steps that hit a wall, of those the ones followed by another forward, cells)."""
    _, info = env.reset(seed=seed)
    policy.reset()
    bumps = pushes = 0
    bumped = False
    cells = set()
    for _ in range(steps):
        action = policy.act(info)
        pushes += bumped and action == FORWARD  # the step after a bump walks into the wall again
        before = info["pose"][:2]
        _, _, terminated, truncated, info = env.step(action)
        bumped = action == FORWARD and np.allclose(before, info["pose"][:2])  # a forward step that did not move
        bumps += bumped
        cells.add(tuple(np.floor(info["pose"][:2] / 0.75).astype(int)))
        if terminated or truncated:
            break
    return bumps, pushes, len(cells)


def test_explorer_turns_away_from_walls(make_scene):
    env = make_scene()
    seeds = range(1, 5)
    explorer = np.array([bumps_and_cells(env, Explorer(np.random.default_rng(s)), s) for s in seeds])
    walker = np.array([bumps_and_cells(env, RandomWalker(np.random.default_rng(s)), s) for s in seeds])
    # After each bump the explorer turns; a random walker (same seeds, same scenes) often walks on into the wall.
    assert explorer[:, 0].sum() > 0 and explorer[:, 1].sum() == 0
    assert walker[:, 1].sum() >= 10
    assert explorer[:, 0].sum() < walker[:, 0].sum() / 2  # fewer steps wasted on walls
    assert explorer[:, 2].sum() > walker[:, 2].sum()  # and more floor covered


def test_coverage_counts_what_the_camera_sees(make_scene):
    from agents.coverage import coverage, floor_points, visible

    env = make_scene()
    env.reset(seed=0)
    scene = env.unwrapped
    room = scene.grid_rooms[0]
    cx, cz = (room.min_x + room.max_x) / 2, (room.min_z + room.max_z) / 2
    points = floor_points(scene)
    # Looking along +X (yaw 0) from the room's centre: points ahead are seen, points behind are not.
    seen = visible(scene, points, np.array([cx, cz, 0.0]))
    ahead = (points[:, 0] > cx + 0.5) & (np.abs(points[:, 1] - cz) < 0.2) & (points[:, 0] < room.max_x)
    behind = points[:, 0] < cx - 0.5
    assert seen[ahead].all() and not seen[behind].any()
    # Turning on the spot reveals more floor than one view, never more than all of it.
    one = coverage(scene, [np.array([cx, cz, 0.0])])
    four = coverage(scene, [np.array([cx, cz, k * np.pi / 2]) for k in range(4)])
    assert 0 < one < four <= 1


def test_collect_with_top_down_ends_each_scene_with_its_view_from_above(make_scene):
    env = make_scene()
    plain, topped = ListSink(), ListSink()
    collect(env, plain, [7, 8], 20, RandomWalker(np.random.default_rng(1)), frame_skip=5)
    n = collect(env, topped, [7, 8], 20, RandomWalker(np.random.default_rng(1)), frame_skip=5, top_down=True)
    assert n == len(topped.ids) == len(plain.ids) + 2
    marks = is_top_down(np.stack(topped.viewpoints))
    assert marks.sum() == 2 and not is_top_down(np.stack(plain.viewpoints)).any()
    ends = np.flatnonzero(marks)
    assert [topped.ids[i] for i in ends] == [7, 8] and ends[-1] == n - 1  # the last frame of each scene
    env.reset(seed=8)
    np.testing.assert_array_equal(topped.images[ends[-1]], env.unwrapped.render_top_down())

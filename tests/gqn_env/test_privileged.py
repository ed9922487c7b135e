"""Privileged ground truth: ray distances, goal visibility and bearing, doorways."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gqn_env.envs import privileged


def _red_pixels(image):
    img = image.astype(int)
    return (img[..., 0] > 120) & (img[..., 1] < 60) & (img[..., 2] < 60)


def _place(scene, x, z, yaw):
    scene.agent.pos = np.array([x, 0.0, z])
    scene.agent.dir = yaw


@pytest.fixture
def one_room(make_scene):
    env = make_scene(num_rows=1, num_cols=1, objects_per_room=0, room_size=4.0, image_size=32)
    env.reset(seed=0)
    return env.unwrapped


def test_ray_distances_measure_the_walls_of_a_square_room(one_room):
    _place(one_room, 1.0, 3.0, 0.0)  # facing +X in a 4 m room spanning [0, 4]
    ahead, left, behind, right = privileged.ray_distances(one_room, np.array([0, 0.5, 1, 1.5]) * math.pi)
    assert ahead == pytest.approx(3.0)
    assert behind == pytest.approx(1.0)
    assert left == pytest.approx(3.0)  # left of +X is -Z (MiniWorld's heading is (cos, -sin))
    assert right == pytest.approx(1.0)
    diagonal = privileged.ray_distances(one_room, np.array([math.pi / 4]))[0]
    assert diagonal == pytest.approx(3.0 * math.sqrt(2))


def test_goal_bearing_and_visibility_agree_with_the_rendered_image(one_room):
    gx, gz = one_room.goal.pos[0], one_room.goal.pos[2]
    x, z = one_room.agent.pos[0], one_room.agent.pos[2]
    to_goal = math.atan2(-(gz - z), gx - x)  # yaw that faces the goal
    for offset, side in ((0.0, None), (0.3, "right"), (-0.3, "left"), (math.pi, None)):
        one_room.agent.dir = to_goal + offset
        image = one_room.render_obs()
        red = _red_pixels(image)
        visible = privileged.goal_visible(one_room)
        assert visible == bool(red.any()), offset
        bearing = privileged.bearing(one_room, np.array([gx, gz]))
        assert bearing == pytest.approx(-offset if abs(offset) < math.pi else -math.pi, abs=1e-6)
        if side is not None:
            centre = np.nonzero(red)[1].mean() / red.shape[1]  # 0 = left edge of the image
            assert (centre > 0.5) == (side == "right")


def test_goal_visible_from_each_pose_puts_the_agent_back(one_room):
    gx, gz = one_room.goal.pos[0], one_room.goal.pos[2]
    x, z = one_room.agent.pos[0], one_room.agent.pos[2]
    to_goal = math.atan2(-(gz - z), gx - x)
    where = (one_room.agent.pos.copy(), one_room.agent.dir)
    poses = np.array([[x, z, to_goal, 0.0], [x, z, to_goal + math.pi, 0.0], [x, z, to_goal + 0.2, 0.0]])
    np.testing.assert_array_equal(privileged.goal_visible_from(one_room, poses), [True, False, True])
    np.testing.assert_array_equal(one_room.agent.pos, where[0])
    assert one_room.agent.dir == where[1]
    assert privileged.goal_visible_from(one_room, poses[:0]).shape == (0,)


def test_a_wall_hides_the_goal(make_scene):
    env = make_scene(num_rows=2, num_cols=2, objects_per_room=0)
    env.reset(seed=3)
    scene = env.unwrapped
    gx, gz = scene.goal.pos[0], scene.goal.pos[2]
    outcomes = []
    # Face the goal from the centre of every room: some lines of sight cross a wall, some do not.
    for room in scene.grid_rooms:
        for dx, dz in ((0, 0), (0.8, 0.8), (-0.8, 0.8), (0.8, -0.8), (-0.8, -0.8)):
            x, z = (room.min_x + room.max_x) / 2 + dx, (room.min_z + room.max_z) / 2 + dz
            if math.hypot(gx - x, gz - z) < 1.0:
                continue
            _place(scene, x, z, math.atan2(-(gz - z), gx - x))
            blocked = privileged.ray_distances(scene, np.zeros(1))[0] < math.hypot(gx - x, gz - z)
            visible = privileged.goal_visible(scene)
            assert visible == (not blocked)
            assert visible == bool(_red_pixels(scene.render_obs()).any()), (x, z)
            outcomes.append(visible)
    assert any(outcomes) and not all(outcomes)


def test_doorways_join_the_rooms_of_a_spanning_tree(make_scene):
    env = make_scene(num_rows=2, num_cols=3)
    env.reset(seed=1)
    scene = env.unwrapped
    assert len(scene.doorways) == 2 * 3 - 1
    for x, z in scene.doorways:
        assert scene.is_free(x, z)  # a doorway's centre lies in the opening between two rooms
        assert not any(r.min_x <= x <= r.max_x and r.min_z <= z <= r.max_z for r in scene.grid_rooms)
    distance, bearing = privileged.nearest_doorway(scene)
    assert math.isfinite(distance) and -math.pi <= bearing < math.pi


def test_obstacle_rays_stop_at_objects_as_well_as_walls(one_room):
    gx, gz = one_room.goal.pos[0], one_room.goal.pos[2]
    x, z = one_room.agent.pos[0], one_room.agent.pos[2]
    one_room.agent.dir = math.atan2(-(gz - z), gx - x)  # face the goal box
    distance = math.hypot(gx - x, gz - z)
    ahead = privileged.obstacle_distances(one_room, np.zeros(1))[0]
    assert ahead == pytest.approx(distance - one_room.goal.radius, abs=1e-6)
    assert privileged.ray_distances(one_room, np.zeros(1))[0] > distance  # walls alone: past the box
    behind = privileged.obstacle_distances(one_room, np.array([math.pi]))[0]
    assert behind == pytest.approx(privileged.ray_distances(one_room, np.array([math.pi]))[0])

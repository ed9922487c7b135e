"""benchmarks/top_down.py: where the top-down pixels are in the world, and a tiny end-to-end run."""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch

from benchmarks import top_down
from world_model import GQN, GQNConfig, save_checkpoint


def test_pixel_floor_points_are_where_the_renderer_draws_things():
    env = gym.make("GQNMazeScene-S2-v0", image_size=32)
    try:
        env.reset(seed=3)
        scene = env.unwrapped
        size = 64
        image = scene.render_top_down(size).astype(int)
        points, on_floor = top_down.pixel_floor_points(scene, size)
        floor = np.median(image.reshape(-1, 3)[on_floor], axis=0)
        boxes = [e for e in scene.entities if type(e).__name__ == "_StaticBox"]
        assert boxes
        for box in boxes:  # the pixel whose centre is nearest the box shows the box, not the floor
            nearest = np.argmin(np.hypot(points[:, 0] - box.pos[0], points[:, 1] - box.pos[2]))
            assert on_floor[nearest]
            assert np.abs(image.reshape(-1, 3)[nearest] - floor).sum() > 60
        assert not on_floor[0] and on_floor[(size // 4) * size + size // 4]  # a corner is margin; a room is floor
        assert 0.5 < on_floor.mean() < 0.9
    finally:
        env.close()


def test_a_tiny_run_reports_every_frame_count_and_is_deterministic(tmp_path):
    torch.manual_seed(0)
    config = GQNConfig.tiny().replace(view_channels=4)  # a nearest-view model: render needs the context
    path = save_checkpoint(tmp_path / "tiny.pt", model=GQN(config), config=config)
    args = argparse.Namespace(
        checkpoint=str(path),
        env_id="GQNMazeScene-S2-v0",
        scenes=2,
        steps=20,
        samples=2,
        mean_scenes=2,
        first_scene=0,
        policy="explorer",
    )
    first, second = top_down.run(args), top_down.run(args)
    other = top_down.run(argparse.Namespace(**{**vars(args), "first_scene": 1000}))
    assert other["psnr_model"] != first["psnr_model"]  # other held-out scenes
    random_walk = top_down.run(argparse.Namespace(**{**vars(args), "policy": "random"}))
    assert random_walk["by_frames"][-1]["floor_seen"] != first["by_frames"][-1]["floor_seen"]  # another walker
    assert [row["frames"] for row in first["by_frames"]] == [1, 4, 16, "all"]
    for key in ("psnr_model", "gap_db_mean_image", "gap_db_shuffled"):
        assert np.isfinite(first[key]) and first[key] == second[key]
    assert first["gap_db_shuffled"] == first["psnr_model"] - first["psnr_shuffled"]
    seen = [row["floor_seen"] for row in first["by_frames"]]
    assert seen == sorted(seen) and 0 < seen[-1] <= 1  # the walk sees more floor as it goes
    for row in first["by_frames"]:
        assert row["std_unseen"] >= 0 and 0 < row["psnr_model"] < 100
        # paired over scenes (both walks see floor from the first frame): the mean gap is the gap of the means
        assert np.isclose(row["std_unseen_minus_seen"], row["std_unseen"] - row["std_seen"])
        assert row["std_unseen_minus_seen_se"] >= 0
    rows = first["by_frames"]
    for before, row in zip(rows[:-1], rows[1:], strict=True):  # paired: the mean change is the change of means
        assert np.isclose(row["psnr_model_change"], row["psnr_model"] - before["psnr_model"])
        assert row["psnr_model_change_se"] >= 0
    assert "psnr_model_change" not in rows[0]
    truth, predictions, stds, _ = first["_figure"]
    assert truth.shape == predictions[0].shape == (16, 16, 3) and stds[0].shape == (16, 16)
    top_down.plot(truth, predictions, stds, first["by_frames"], tmp_path / "strip.png")
    assert (tmp_path / "strip.png").stat().st_size > 1000


def test_mean_and_se():
    assert top_down.mean_and_se([1.0, 3.0, float("nan")]) == (2.0, 1.0)
    assert all(np.isnan(top_down.mean_and_se([1.0, float("nan")])))

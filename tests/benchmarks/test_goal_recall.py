"""Does the world model remember the goal (benchmarks/goal_recall.py): masks, conditions, contrasts, a tiny run."""

import argparse

import numpy as np
import pytest

from benchmarks import goal_recall as gr
from world_model import GQN, GQNConfig

TINY_MAZE = {"num_rows": 2, "num_cols": 2, "map_size": 64}
VIEW_MODEL = GQNConfig.tiny().replace(view_channels=6)


def tiny_args(**overrides) -> argparse.Namespace:
    args = dict(checkpoint=None, scenes=6, steps=30, min_frames=2, strip_scenes=2, seed=0)
    return argparse.Namespace(**{**args, **overrides})


def test_the_goal_mask_is_the_red_pixels_in_the_columns_the_box_spans():
    truth = np.full((32, 32, 3), 0.4, dtype=np.float32)
    truth[10:20, 14:18] = (0.8, 0.1, 0.1)  # the box, in the middle
    truth[10:20, 0:4] = (0.8, 0.1, 0.1)  # something red at the edge: not the box faced
    truth[25:27, 15:17] = (0.5, 0.4, 0.4)  # reddish floor: not red enough
    mask = gr.goal_mask(truth, distance=2.0)
    assert mask[10:20, 14:18].all()
    assert mask.sum() == 40  # nothing else
    # Nearer, the box spans more columns.
    wide = np.full((32, 32, 3), 0.4, dtype=np.float32)
    wide[10:20, 8:24] = (0.8, 0.1, 0.1)
    assert gr.goal_mask(wide, distance=1.3).sum() > gr.goal_mask(wide, distance=3.0).sum()


def test_contrasts_are_paired_differences_with_their_errors():
    rng = np.random.default_rng(0)
    scores = []
    for _ in range(50):
        base = {m: float(rng.normal()) for m in ("goal_redness", "other_redness", "goal_psnr", "psnr")}
        row = {c: dict(base) for c in gr.CONDITIONS}
        row["r_full"] = {**base, "goal_redness": base["goal_redness"] + 0.1}  # the same scene, a little redder
        row["truth"] = {"goal_redness": 0.8, "other_redness": 0.0, "goal_psnr": 100.0, "psnr": 100.0}
        scores.append(row)
    out = gr.summarize(scores)
    contrast = {(c["contrast"], c["measure"]): c for c in out["contrasts"]}
    held = contrast["r_holds_goal", "goal_redness"]
    assert held["mean"] == pytest.approx(0.1) and held["se"] == pytest.approx(0.0, abs=1e-12)
    assert held["share_positive"] == 1.0
    assert contrast["r_holds_goal", "psnr"]["mean"] == 0.0 and contrast["r_holds_goal", "psnr"]["share_positive"] == 0
    assert contrast["view_adds", "goal_redness"]["mean"] == pytest.approx(-0.1)
    truth = next(c for c in out["conditions"] if c["condition"] == "truth")
    assert set(truth) == {"condition", "goal_redness", "other_redness"}  # no PSNR of the truth against itself
    assert truth["goal_redness"] == pytest.approx(0.8)


def _scene(images: np.ndarray, viewpoints: np.ndarray, saw_goal: np.ndarray) -> gr.Scene:
    s = images.shape[1]
    return gr.Scene(
        seed=0,
        images=images,
        viewpoints=viewpoints,
        saw_goal=saw_goal,
        query_viewpoint=viewpoints[0] + 0.01,
        truth=np.zeros((s, s, 3), np.float32),
        goal_mask=np.ones((s, s), bool),
    )


def test_r_is_summed_over_the_frames_each_condition_names():
    """Frames that saw the goal and repeat frames that did not leave r as it was; other frames change it."""
    model = GQN(VIEW_MODEL).eval()
    s, d = VIEW_MODEL.image_size, VIEW_MODEL.viewpoint_dim
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, s, s, 3), dtype=np.uint8)
    viewpoints = rng.uniform(-1, 1, (8, d)).astype(np.float32)
    saw = np.zeros(16, bool)
    saw[8:] = True
    # More frames than context_max (4): r is the mean times 4, so repeating every frame keeps it.
    repeated = gr.render_conditions(model, _scene(np.concatenate([images] * 2), np.concatenate([viewpoints] * 2), saw))
    np.testing.assert_allclose(repeated["r_full"], repeated["r_without_goal"], atol=1e-6)
    np.testing.assert_allclose(repeated["r_full_alone"], repeated["r_without_goal_alone"], atol=1e-6)
    other = rng.integers(0, 256, (8, s, s, 3), dtype=np.uint8)
    changed = gr.render_conditions(
        model, _scene(np.concatenate([images, other]), np.concatenate([viewpoints] * 2), saw)
    )
    assert not np.allclose(changed["r_full"], changed["r_without_goal"])
    for image in changed.values():
        assert image.shape == (s, s, 3) and np.isfinite(image).all()


def test_tiny_run_keeps_scenes_that_saw_the_goal_and_repeats_under_a_seed(tmp_path):
    model = GQN(VIEW_MODEL)  # untrained: the point is the machinery, not the numbers
    payload, strip = gr.run(tiny_args(), model=model, env_kwargs=TINY_MAZE)
    assert 1 <= payload["scenes"] <= payload["scenes_walked"] == 6
    assert payload["goal_frames_per_scene"] >= 1 and payload["goal_pixels_per_scene"] >= 3
    truth = next(c for c in payload["conditions"] if c["condition"] == "truth")
    assert truth["goal_redness"] > gr.GOAL_REDNESS  # the mask holds the red box's pixels
    assert {c["contrast"] for c in payload["contrasts"]} == {name for name, _, _ in gr.CONTRASTS}
    assert all(np.isfinite(c["mean"]) for c in payload["contrasts"])
    assert len(strip) == min(2, payload["scenes"]) and set(strip[0]) == {"truth", *gr.CONDITIONS}
    gr.save_strip(strip, tmp_path / "strip.png")
    assert (tmp_path / "strip.png").stat().st_size > 0
    again, _ = gr.run(tiny_args(), model=model, env_kwargs=TINY_MAZE)
    assert again["contrasts"] == payload["contrasts"]


def test_a_model_without_a_nearest_view_input_is_refused():
    with pytest.raises(ValueError, match="view_channels"):
        gr.run(tiny_args(), model=GQN(GQNConfig.tiny()), env_kwargs=TINY_MAZE)


def test_frame_sets_split_the_walk_by_whether_the_goal_was_in_view():
    saw = np.zeros(40, bool)
    saw[5:25] = True  # 20 sightings
    sets = gr.frame_sets(saw, context_max=8, seed=3)
    np.testing.assert_array_equal(sets["all"], np.arange(40))
    np.testing.assert_array_equal(sets["without_goal"], np.r_[0:5, 25:40])
    assert len(sets["sightings"]) == 8 and saw[sets["sightings"]].all()
    assert sets["sightings"][0] == 5 and sets["sightings"][-1] == 24  # spread from the first sighting to the last
    assert len(sets["others"]) == 8 and not saw[sets["others"]].any() and len(set(sets["others"])) == 8
    np.testing.assert_array_equal(sets["others"], gr.frame_sets(saw, 8, seed=3)["others"])  # seeded
    # Fewer frames without the goal than context_max: both short contexts shrink to match.
    few = gr.frame_sets(np.r_[np.ones(10, bool), np.zeros(3, bool)], context_max=8, seed=0)
    assert len(few["sightings"]) == len(few["others"]) == 3

"""The probe benchmark: ground truth per step, masks, and a tiny end-to-end run."""

import argparse

import numpy as np
import pytest

from benchmarks import rl_probes


@pytest.mark.slow
def test_tiny_probe_run_scores_every_candidate_and_its_ground_truth_is_consistent():
    args = argparse.Namespace(scenes=6, episode_steps=30, width=8, epochs=20, seed=0, checkpoint=None, candidates=None)
    episodes = rl_probes.collect(args)
    assert len(episodes) == 6 and all(1 <= len(ep) <= 30 for ep in episodes)
    for ep in episodes:
        seen = False
        for record in ep:
            assert record["pixels"].shape == (64, 64, 3 * rl_probes.STACK)
            assert record["remembered"] == (seen and not record["goal_visible"])  # memory frames follow a sighting
            if record["goal_visible"]:
                assert abs(record["goal_bearing"]) <= 1.0  # in view: within the half field of view
            seen = seen or record["goal_visible"]
            np.testing.assert_allclose(np.linalg.norm(record["doorway"]), 1.0)
    rows, info = rl_probes.run_probes(args)
    assert [r["observation"] for r in rows][:3] == ["pixels_random_projection", "pixels_pca", "shuffled_representation"]
    for row in rows:
        for kind in ("linear", "mlp"):
            score = row[f"free_ahead/{kind}"]  # defined on every frame, so always fit
            assert np.isfinite(score) and score <= 1.0
    assert "landmarks" in [r["observation"] for r in rows]
    assert info["train_scenes"] == 4

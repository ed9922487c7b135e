"""What r encodes (benchmarks/representation_probes.py): retrieval, the classifier probe, a tiny end-to-end run."""

import argparse
import dataclasses

import numpy as np
import pytest

from benchmarks import representation_probes as rp
from world_model import GQN, GQNConfig
from world_model.probes import balanced_accuracy_multiclass, fit_classifier

TINY_MAZE = {"num_rows": 2, "num_cols": 2, "map_size": 64}


def tiny_args(**overrides) -> argparse.Namespace:
    args = dict(checkpoint=None, scenes=9, steps=16, policy="explorer", retrieval_scenes=3, pairs=1, epochs=20, seed=0)
    return argparse.Namespace(**{**args, **overrides})


def test_retrieval_of_identical_halves_is_perfect_and_of_unrelated_keys_is_not():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 16))
    for metric in ("cosine", "euclidean"):
        assert rp.retrieval_accuracy(x, x, metric) == 1.0
        assert rp.retrieval_accuracy(x, x + 0.01 * rng.standard_normal(x.shape), metric) == 1.0
        assert rp.retrieval_accuracy(x, rng.standard_normal(x.shape), metric) < 0.2  # chance 1/40
        assert rp.retrieval_accuracy(x, rng.standard_normal(x.shape), metric, k=40) == 1.0  # every key is in the top N
    # Ties count against the query: identical keys for every scene retrieve nothing.
    assert rp.retrieval_accuracy(x, np.ones_like(x)) == 0.0
    # A reversed pairing puts every own key elsewhere: only the middle row (if any) can match.
    assert rp.retrieval_accuracy(x, x[::-1]) == 0.0
    with pytest.raises(ValueError, match="metric"):
        rp.retrieval_accuracy(x, x, "manhattan")
    with pytest.raises(ValueError, match="shape"):
        rp.retrieval_accuracy(x, x[:10])


def test_r_parts_split_a_map_models_r_and_retrieval_scores_each_part():
    r = np.arange(12.0).reshape(2, 6)
    parts = rp.r_parts(r, 2)
    np.testing.assert_array_equal(parts["r_scene"], r[:, :2])
    np.testing.assert_array_equal(parts["r_map"], r[:, 2:])
    assert rp.r_parts(r, None) == {} and rp.r_parts(r, 6) == {}  # no map head: nothing to split
    # A coverage head's footprint channel (the last floats) is split off from the learned ones.
    parts = rp.r_parts(r, 2, footprint=1)
    np.testing.assert_array_equal(parts["r_map"], r[:, 2:5])
    np.testing.assert_array_equal(parts["footprints"], r[:, 5:])
    np.testing.assert_array_equal(parts["r_no_footprints"], r[:, :5])
    # Scenes whose first two features repeat between the halves of the walk and whose
    # last four do not: the scene part retrieves every scene, the map part none.
    rng = np.random.default_rng(0)
    n, d = 12, 40
    scene = rng.standard_normal((n, 2))
    records = []
    for i in range(n):
        halves = [np.concatenate([scene[i], rng.standard_normal(4)]) for _ in range(2)]
        encodings = np.stack([halves[0]] * 4 + [halves[1]] * 4).astype(np.float32)  # first half, then second
        pixels = {part: rng.random(d).astype(np.float32) for part in ("all", "even", "odd", "first", "second")}
        records.append(
            rp.SceneRecord(
                seed=i,
                encodings=encodings,
                mean_pixels=pixels,
                goal_xz=np.zeros(2),
                goal_seen=False,
                goal_reached=False,
                last_viewpoint=np.zeros(7, np.float32),
                textures=np.zeros(4, np.int64),
                visited=np.zeros(4, bool),
                num_textures=12,
            )
        )
    rows = {(row["split"], row["feature"]): row for row in rp.run_retrieval(records, 1, 0, scene_width=2)}
    assert rows[("halves", "r_scene")]["top1/cosine"] == 1.0
    assert rows[("halves", "r_map")]["top1/cosine"] < 0.5
    assert rows[("halves", "r_scene")]["width"] == 2 and rows[("halves", "r_map")]["width"] == 4
    assert ("halves", "r_scene") not in {(r["split"], r["feature"]) for r in rp.run_retrieval(records, 1, 0)}


def test_r_layout_finds_the_scene_width_and_a_coverage_heads_footprint():
    plain = GQNConfig.preset("tiny").model
    assert rp.r_layout(plain) == (None, 0)
    coverage = dataclasses.replace(plain, map_channels=3, map_layout="coverage")
    side = coverage.hidden_size
    assert rp.r_layout(coverage) == (plain.r_channels, side * side)
    assert rp.r_layout(dataclasses.replace(coverage, map_layout="grid")) == (plain.r_channels, 0)


def test_classifier_probe_reads_separable_labels_and_is_at_chance_on_random_ones():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 12))
    labels = np.stack([np.argmax(x[:, :4], axis=1), np.argmax(x[:, 4:8], axis=1)], axis=1)  # two 4-way heads
    result = fit_classifier(x[:200], labels[:200], x[200:], labels[200:], 4, epochs=100)
    assert result.accuracy > 0.7 and result.balanced_accuracy > 0.7
    assert result.predicted.shape == (100, 2) and result.n_test == 100
    assert result.accuracy == np.mean(result.predicted == labels[200:])
    noise = rng.integers(0, 4, (300, 2))
    result = fit_classifier(x[:200], noise[:200], x[200:], noise[200:], 4, kind="mlp", epochs=100)
    assert abs(result.accuracy - 0.25) < 0.12
    assert balanced_accuracy_multiclass(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0])) == 0.5
    with pytest.raises(ValueError, match="lie in"):
        fit_classifier(x[:200], labels[:200], x[200:], labels[200:], 3)


@pytest.mark.slow
def test_tiny_run_scores_are_in_range_and_repeat_under_a_seed(tmp_path):
    model = GQN(GQNConfig.tiny())  # untrained: the point is the machinery, not the numbers
    args = tiny_args()
    payload, strip = rp.run(args, model=model, env_kwargs=TINY_MAZE)

    for key in ("probes", "probe_counts", "retrieval", "interpolation", "scenes", "goal_seen_share", "model"):
        assert key in payload
    assert payload["scenes"] == 9 and payload["probe_counts"]["train_scenes"] == 6
    rows = {row["feature"]: row for row in payload["probes"]}
    assert list(rows) == [*rp.PROBE_FEATURES, "chance"]
    classes = payload["probe_counts"]["texture_classes"]
    assert rows["chance"]["texture/linear"] == round(1 / classes, 3)
    for name in rp.PROBE_FEATURES:
        for kind in rp.KINDS:
            assert rows[name][f"goal_xz/{kind}"] <= 1.0  # R^2
            for target in ("texture", "texture_balanced"):
                assert 0.0 <= rows[name][f"{target}/{kind}"] <= 1.0

    retrieval = payload["retrieval"]
    assert {(row["split"], row["feature"]) for row in retrieval} == {
        (split, feature) for split in rp.SPLIT_PARTS for feature in ("r", "pixels_random_projection", "pixels_mean")
    }
    for row in retrieval:
        assert row["scenes"] == 3 and row["chance_top1"] == round(1 / 3, 4)
        assert 0.0 <= row["top1/cosine"] <= row["top5/cosine"] <= 1.0 and 0.0 <= row["top1/euclidean"] <= 1.0
    assert rows["r"]["width"] == next(r for r in retrieval if r["feature"] == "r")["width"] == 8  # tiny r

    interp = payload["interpolation"]
    assert interp["pairs"] == 1 and interp["alphas"][0] == 0.0 and interp["alphas"][-1] == 1.0
    for curve in interp["mse_along_alpha"].values():
        assert len(curve) == len(rp.ALPHAS) and all(0.0 <= v <= 1.0 for v in curve)
    assert interp["truth_A_vs_truth_B_mse"] > 0  # two different scenes look different from the same pose
    assert strip["ctxA"].shape == (len(rp.ALPHAS), 16, 16, 3) and strip["path_truth"].shape[0] == len(rp.ALPHAS) + 2
    png = tmp_path / "strip.png"
    rp.save_strip(strip, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    again, _ = rp.run(args, model=model, env_kwargs=TINY_MAZE)
    for key in ("probes", "retrieval", "interpolation", "goal_seen_share", "rooms_visited_share"):
        assert again[key] == payload[key], key


@pytest.mark.slow
def test_scene_records_carry_consistent_ground_truth():
    model = GQN(GQNConfig.tiny())
    args = tiny_args(scenes=3, pairs=0)
    records = rp.collect(model, args, TINY_MAZE)
    for record in records:
        assert 2 <= len(record.encodings) <= 16 and record.encodings.shape[1] == 8
        assert np.all(np.abs(record.goal_xz) <= 1.0)
        assert isinstance(record.goal_reached, bool)
        assert record.last_viewpoint.shape == (7,) and np.all(np.abs(record.last_viewpoint) <= 1.0)
        assert len(set(record.textures.tolist())) == 4  # distinct wall textures per room while they last
        assert record.visited.any() and record.images is None
        # r of identical parts is identical; of the two halves, not.
        r_all = rp.representation(record, "all", 4)
        np.testing.assert_allclose(r_all, record.encodings.mean(axis=0) * 4, rtol=1e-6)
        assert not np.allclose(rp.representation(record, "first", 4), rp.representation(record, "second", 4))
    # Retrieval of each scene's r against itself is perfect (the scenes' r differ).
    r = np.stack([rp.representation(rec, "all", 4) for rec in records])
    assert rp.retrieval_accuracy(r, r) == 1.0

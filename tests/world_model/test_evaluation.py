from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.world_model.conftest import random_scenes
from world_model import GQN, evaluate
from world_model.evaluation import format_table


def predict_one(config, scene, query):
    """The prior-mean prediction of query ``query`` of ``scene`` by a fresh model, ``(S, S, 3)`` in [0, 1]."""
    model = GQN(config)
    with torch.no_grad():
        r = model.scene_representation(scene["context_images"][None], scene["context_viewpoints"][None])
        pred = model.render(r, scene["query_viewpoints"][query : query + 1])
    return pred[0].movedim(0, -1).double().numpy()


def test_baselines_on_a_constructed_case(tiny_config):
    s, d = tiny_config.image_size, tiny_config.viewpoint_dim
    scenes = []
    for value in (40, 200):
        ctx_vp = np.zeros((3, d), np.float32)
        ctx_vp[:, 0] = [-1.0, 0.0, 1.0]
        ctx = np.stack([np.full((s, s, 3), value + 10 * i, np.uint8) for i in range(3)])
        q_vp = np.zeros((2, d), np.float32)
        q_vp[:, 0] = [0.9, -0.8]  # nearest context views: index 2, then index 0
        queries = ctx[[2, 0]].copy()
        scenes.append(
            {"context_images": ctx, "context_viewpoints": ctx_vp, "query_images": queries, "query_viewpoints": q_vp}
        )
    mean_image = np.full((s, s, 3), 0.5)
    results = evaluate(GQN(tiny_config), scenes, mean_image)
    assert results["mse_nearest"] == 0.0  # the queries are exactly their nearest context views
    expected = np.mean([((v + 10 * i) / 255 - 0.5) ** 2 for v in (40, 200) for i in (2, 0)])
    assert results["mse_mean_image"] == pytest.approx(expected)
    assert results["queries"] == 4 and results["scenes"] == 2
    assert results["gap_db_mean_image"] == pytest.approx(results["psnr_model"] - results["psnr_mean_image"])
    assert "shuffled" in format_table(results)
    # 4 queries, 4 distance bins of one query each; distances 0.1, 0.2, 0.1, 0.2 -> order 0, 2, 1, 3.
    model_psnr = [
        -10 * np.log10(((predict_one(tiny_config, sc, q) - sc["query_images"][q] / 255) ** 2).mean())
        for sc in scenes
        for q in range(2)
    ]
    for i, query in enumerate([0, 2, 1, 3], start=1):  # a copy's PSNR is floored at 100 dB
        assert results[f"gap_db_nearest_bin{i}"] == pytest.approx(model_psnr[query] - 100.0, abs=1e-4)
        assert results[f"nearest_distance_bin{i}"] == pytest.approx([0.1, 0.1, 0.2, 0.2][i - 1])
    assert "near to far" in format_table(results)
    with pytest.raises(ValueError, match="at least 2 scenes"):
        evaluate(GQN(tiny_config), scenes[:1], mean_image)


def test_model_and_shuffled_context_use_the_prior_mean_and_a_derangement(tiny_config):
    s = tiny_config.image_size
    scenes = random_scenes(tiny_config, views=(1, 2, 3))
    model = GQN(tiny_config)
    results = evaluate(model, scenes, np.zeros((s, s, 3)))

    def mse(context_scene, query_scene):
        with torch.no_grad():
            r = model.scene_representation(
                context_scene["context_images"][None], context_scene["context_viewpoints"][None]
            )
            pred = model.render(r.expand(2, *r.shape[1:]), query_scene["query_viewpoints"])
        truth = torch.from_numpy(query_scene["query_images"]).movedim(-1, 1).double() / 255
        return ((pred.double() - truth) ** 2).mean().item()

    own = np.mean([mse(sc, sc) for sc in scenes])
    other = np.mean([mse(scenes[(i + 1) % 3], sc) for i, sc in enumerate(scenes)])
    assert results["mse_model"] == pytest.approx(own, rel=1e-5)
    assert results["mse_shuffled"] == pytest.approx(other, rel=1e-5)
    assert results["mse_shuffled"] != pytest.approx(results["mse_model"], rel=1e-6)
    assert model.training  # evaluate restores the mode it found


def test_evaluate_takes_the_scenes_make_eval_scenes_builds(tiny_config):
    import gymnasium as gym

    from agents.world_model_training import make_eval_scenes

    env = gym.make("GQNMazeScene-v0", num_rows=1, num_cols=2, image_size=tiny_config.image_size, map_size=32)
    scenes = make_eval_scenes(env, 3, num_context=4, num_queries=2, steps=20)
    env.close()
    model = GQN(tiny_config)
    as_objects = evaluate(model, scenes)  # EvalScene objects, mean image from their context views
    as_dicts = evaluate(model, [s.as_dict() for s in scenes])
    assert as_objects["scenes"] == 3 and as_objects["psnr_model"] == pytest.approx(as_dicts["psnr_model"])
    mean = np.concatenate([s.context_images for s in scenes]).mean(axis=0) / 255.0
    assert as_objects["mse_mean_image"] == pytest.approx(evaluate(model, scenes, mean)["mse_mean_image"])
    with pytest.raises(TypeError, match="lacks"):
        evaluate(model, [{"context_images": 1}, {"context_images": 2}])

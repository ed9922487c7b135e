"""Held-out evaluation that means something.

Once sigma is annealed the ELBO has a fixed floor (~6.9k nats for 64x64x3 at
sigma 0.7), so it does not measure quality. Instead, on held-out scenes, each
with K context views and Q query views, we compare the model's predicted image
for each query (the generator run with every z at its prior mean: a
deterministic "mean" prediction) with the true image, next to:

* (a) ``mean_image``: the mean training image, the best pose-blind constant;
* (b) ``nearest``: the context view whose viewpoint vector is nearest (Euclidean)
  to the query's: what a lookup table of the agent's own frames would give;
* (c) ``shuffled``: the same model given *another* scene's context (scene i+1,
  a derangement): the gap to it is what the representation carries of the scene.

MSE is per pixel on [0, 1] images; PSNR is the mean over queries of
``-10 log10(MSE)`` per image.

The gain over (b) depends on how close the query is to the nearest context view:
copying an almost identical frame is hard to beat. So the queries are also split
into :data:`DISTANCE_BINS` equal-count bins by that distance, and the gain over the
nearest view is reported per bin (``gap_db_nearest_bin1`` nearest ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

METHODS = ("model", "mean_image", "nearest", "shuffled")
DISTANCE_BINS = 5


def per_image_psnr(mse: np.ndarray) -> np.ndarray:
    """PSNR in dB of each image from its MSE on [0, 1] pixels (floored at 1e-10: an exact copy scores 100 dB)."""
    return -10 * np.log10(np.maximum(mse, 1e-10))


def _mean_psnr(mse: np.ndarray) -> float:
    return float(per_image_psnr(mse).mean())


def per_image_mse(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """MSE of each image, ``(N, ...)`` against ``(N, ...)`` on the same scale, in float64: ``(N,)``."""
    return ((pred.astype(np.float64) - truth.astype(np.float64)) ** 2).reshape(len(truth), -1).mean(axis=1)


@torch.inference_mode()
def _predict(
    model: Any, context_images: np.ndarray, context_viewpoints: np.ndarray, query_viewpoints: np.ndarray
) -> np.ndarray:
    q = len(query_viewpoints)
    r = model.scene_representation(context_images[None], context_viewpoints[None])  # (1, *r_shape)
    r = r.expand(q, *r.shape[1:])  # (Q, *r_shape)
    context = (context_images[None], context_viewpoints[None])  # one scene's context for all queries
    pred = model.render(r, query_viewpoints, context=context, sample=False)  # (Q, 3, S, S)
    return pred.movedim(1, -1).cpu().numpy()  # (Q, S, S, 3)


SCENE_KEYS = ("context_images", "context_viewpoints", "query_images", "query_viewpoints")


def _scene_arrays(scene: Any, index: int) -> dict[str, np.ndarray]:
    """A scene as the dict :func:`evaluate` reads: from a mapping, or an object with those attributes."""
    if isinstance(scene, Mapping):
        missing = [k for k in SCENE_KEYS if k not in scene]
    else:
        missing = [k for k in SCENE_KEYS if not hasattr(scene, k)]
        scene = {k: getattr(scene, k) for k in SCENE_KEYS if hasattr(scene, k)}
    if missing:
        raise TypeError(f"Scene {index} lacks {missing}; a scene holds {SCENE_KEYS} (a dict or an EvalScene)")
    return scene


def evaluate(
    model: Any,
    scenes: Sequence[Any],
    mean_image: np.ndarray | None = None,
    device: Any = None,
    progress: bool = False,
) -> dict[str, float]:
    """Evaluate ``model`` on held-out scenes against the three baselines.

    Args:
        model: A :class:`world_model.GQN`.
        scenes: Dicts (or objects such as ``agents.world_model_training.EvalScene``) with
            ``context_images (K, S, S, 3)`` uint8, ``context_viewpoints (K, D)``,
            ``query_images (Q, S, S, 3)`` uint8, ``query_viewpoints (Q, D)``. At least 2 scenes.
        mean_image: ``(S, S, 3)`` float in [0, 1], the mean training image; default: the
            mean of these scenes' context images.
        device: Unused (the model's device is used); kept for a uniform call signature.
        progress: Show a tqdm bar on stderr, one step a scene.

    Returns:
        ``mse_<method>``, ``psnr_<method>`` for each method, ``gap_db_<baseline>`` =
        model PSNR minus baseline PSNR, counts, and for each distance bin ``i`` (1 = the
        queries nearest a context view) ``gap_db_nearest_bin<i>`` and
        ``nearest_distance_bin<i>`` (the bin's largest viewpoint distance).
    """
    if len(scenes) < 2:
        raise ValueError(f"Need at least 2 scenes (the shuffled baseline borrows another scene), got {len(scenes)}")
    scenes = [_scene_arrays(scene, i) for i, scene in enumerate(scenes)]
    if mean_image is None:
        mean_image = np.concatenate([s["context_images"] for s in scenes]).mean(axis=0) / 255.0
    was_training = model.training
    model.eval()
    mse: dict[str, list[np.ndarray]] = {m: [] for m in METHODS}
    nearest_distance: list[np.ndarray] = []
    mean_image = np.asarray(mean_image, dtype=np.float64)
    numbered: Any = enumerate(scenes)
    if progress:
        from tqdm.auto import tqdm

        numbered = tqdm(numbered, total=len(scenes), desc="evaluate", unit="scene")
    for i, scene in numbered:
        other = scenes[(i + 1) % len(scenes)]
        truth = scene["query_images"].astype(np.float64) / 255.0  # (Q, S, S, 3)
        qv = np.asarray(scene["query_viewpoints"], dtype=np.float32)
        pred = _predict(model, scene["context_images"], scene["context_viewpoints"], qv)
        shuffled = _predict(model, other["context_images"], other["context_viewpoints"], qv)
        # (Q, K) distances between query and context viewpoints
        dist = np.linalg.norm(qv[:, None, :] - scene["context_viewpoints"][None, :, :], axis=-1)
        nearest = scene["context_images"][dist.argmin(axis=1)].astype(np.float64) / 255.0
        nearest_distance.append(dist.min(axis=1))
        mse["model"].append(per_image_mse(pred, truth))
        mse["shuffled"].append(per_image_mse(shuffled, truth))
        mse["nearest"].append(per_image_mse(nearest, truth))
        mse["mean_image"].append(per_image_mse(np.broadcast_to(mean_image, truth.shape), truth))
    model.train(was_training)
    results: dict[str, float] = {"scenes": float(len(scenes)), "queries": float(sum(len(m) for m in mse["model"]))}
    per_image = {method: np.concatenate(values) for method, values in mse.items()}  # (Q_total,) each
    for method, values in per_image.items():
        results[f"mse_{method}"] = float(values.mean())
        results[f"psnr_{method}"] = _mean_psnr(values)
    for method in METHODS[1:]:
        results[f"gap_db_{method}"] = results["psnr_model"] - results[f"psnr_{method}"]
    distance = np.concatenate(nearest_distance)  # (Q_total,)
    bins = np.array_split(np.argsort(distance, kind="stable"), min(DISTANCE_BINS, len(distance)))
    for i, idx in enumerate(bins, start=1):
        results[f"gap_db_nearest_bin{i}"] = _mean_psnr(per_image["model"][idx]) - _mean_psnr(per_image["nearest"][idx])
        results[f"nearest_distance_bin{i}"] = float(distance[idx].max())
    return results


def format_table(results: dict[str, float]) -> str:
    """The results as a small text table."""
    lines = [f"{'method':<12} {'MSE':>9} {'PSNR dB':>8} {'model gain dB':>14}", "-" * 46]
    for method in METHODS:
        gain = "" if method == "model" else f"{results[f'gap_db_{method}']:+.2f}"
        lines.append(f"{method:<12} {results[f'mse_{method}']:>9.5f} {results[f'psnr_{method}']:>8.2f} {gain:>14}")
    lines.append(f"({int(results['scenes'])} held-out scenes, {int(results['queries'])} queries)")
    bins = [i for i in range(1, DISTANCE_BINS + 1) if f"gap_db_nearest_bin{i}" in results]
    if bins:
        gains = " ".join(f"{results[f'gap_db_nearest_bin{i}']:+.2f}" for i in bins)
        edges = " ".join(f"{results[f'nearest_distance_bin{i}']:.2f}" for i in bins)
        lines.append(f"gain over nearest by distance to it, {len(bins)} equal bins, near to far: {gains}")
        lines.append(f"(bins end at viewpoint distances {edges})")
    return "\n".join(lines)

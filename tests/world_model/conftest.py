from __future__ import annotations

import numpy as np
import pytest
import torch

from world_model import GQNConfig, SceneBuffer


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads; one per test avoids oversubscription under ``pytest -n``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fill_buffer(config: GQNConfig, scenes: int = 6, frames: int = 10, seed: int = 0) -> SceneBuffer:
    """A buffer of synthetic scenes: each scene a colour, brightness varying with the viewpoint."""
    rng = np.random.default_rng(seed)
    s = config.image_size
    buffer = SceneBuffer(image_size=s, viewpoint_dim=config.viewpoint_dim, max_scenes=scenes)
    for scene in range(scenes):
        colour = rng.integers(30, 225, size=3)
        vps = rng.uniform(-1, 1, size=(frames, config.viewpoint_dim)).astype(np.float32)
        shade = (vps[:, 0] * 25)[:, None, None, None]
        images = np.clip(colour[None, None, None, :] + shade + rng.normal(0, 3, (frames, s, s, 3)), 0, 255)
        buffer.add_batch(np.full(frames, scene), images.astype(np.uint8), vps)
    return buffer


def random_scenes(config: GQNConfig, views: tuple[int, ...] = (1, 2, 3), queries: int = 2, seed: int = 0) -> list[dict]:
    """Evaluation scenes of random pixels: one per entry of ``views`` (its context-view count)."""
    rng = np.random.default_rng(seed)
    s, d = config.image_size, config.viewpoint_dim
    return [
        {
            "context_images": rng.integers(0, 256, (k, s, s, 3), dtype=np.uint8),
            "context_viewpoints": rng.uniform(-1, 1, (k, d)).astype(np.float32),
            "query_images": rng.integers(0, 256, (queries, s, s, 3), dtype=np.uint8),
            "query_viewpoints": rng.uniform(-1, 1, (queries, d)).astype(np.float32),
        }
        for k in views
    ]


@pytest.fixture
def tiny_config() -> GQNConfig:
    return GQNConfig.tiny()


@pytest.fixture
def tiny_buffer(tiny_config) -> SceneBuffer:
    return fill_buffer(tiny_config)

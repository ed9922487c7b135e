"""The count input (ModelConfig.count_input) and training on contexts longer than context_max."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.world_model.conftest import fill_buffer
from world_model import GQN, CheckpointError, Trainer, load_model, save_checkpoint
from world_model.checkpoint import add_count_input
from world_model.model import context_excess, scale_to_context


@pytest.fixture
def plain_checkpoint(tiny_config, tmp_path):
    config = tiny_config.replace(view_channels=4, map_channels=3)  # as the bundled model: nearest view, map head
    path = tmp_path / "plain.pt"
    save_checkpoint(path, model=GQN(config), step=5)
    return path


def _scene(config, rng, views):
    s, d = config.image_size, config.viewpoint_dim
    images = rng.integers(0, 256, (1, views, s, s, 3), dtype=np.uint8)
    viewpoints = rng.uniform(-1, 1, (1, views, d)).astype(np.float32)
    queries = rng.uniform(-1, 1, (3, d)).astype(np.float32)
    return images, viewpoints, queries


def test_context_excess_is_zero_within_context_max_and_the_log_ratio_beyond():
    np.testing.assert_allclose(context_excess([1, 16, 32, 216], 16), [0, 0, math.log(2), math.log(13.5)], rtol=1e-6)
    assert context_excess(5, 16).shape == ()
    for bad in (0, -3, float("nan"), [4, float("inf")]):
        with pytest.raises(ValueError, match="frames"):
            context_excess(bad, 16)


def test_add_count_input_renders_exactly_as_the_model_it_came_from(plain_checkpoint, tmp_path):
    old = load_model(plain_checkpoint)
    add_count_input(plain_checkpoint, tmp_path / "count.pt")
    new = load_model(tmp_path / "count.pt")
    assert new.config.count_input and not old.config.count_input
    config = old.config
    rng = np.random.default_rng(0)
    views = 3 * config.context_max  # a long context, scaled down
    images, viewpoints, queries = _scene(config, rng, views)
    context = (images, viewpoints)
    with torch.no_grad():
        r = scale_to_context(old.scene_representation(images, viewpoints), views, config.context_max)
        r = r.expand(len(queries), *r.shape[1:])
        want = old.render(r, queries, context=context)
        torch.testing.assert_close(new.render(r, queries, context=context, frames=views), want, rtol=0, atol=0)
        # Trained, the count's weights move off zero, and the same r renders differently by its length.
        for cores in ("generator", "inference"):
            channel = getattr(new.generator, f"{cores}_inputs").slices["count"]
            for core in getattr(new.generator, f"{cores}_cores"):
                core.conv.weight[:, channel].normal_(0, 1.0)
        short = new.render(r, queries, context=context, frames=config.context_max)
        torch.testing.assert_close(short, want, rtol=0, atol=0)  # within context_max the input reads 0
        assert (new.render(r, queries, context=context, frames=views) - want).abs().max() > 1e-3
        with pytest.raises(ValueError, match="frames"):
            new.render(r, queries, context=context, frames=[views, views])  # neither one nor one per query
        with pytest.raises(ValueError, match="frames"):
            new.render(r, queries, context=context, frames=float("nan"))


def test_add_count_input_refuses_a_second_time_and_writes_nothing(plain_checkpoint, tmp_path):
    add_count_input(plain_checkpoint, tmp_path / "count.pt")
    with pytest.raises(CheckpointError, match="already has a count input"):
        add_count_input(tmp_path / "count.pt", tmp_path / "twice.pt")
    assert not (tmp_path / "twice.pt").exists()
    result = subprocess.run(
        [sys.executable, "-m", "gqn_env.cli", "add-count", str(tmp_path / "count.pt"), str(tmp_path / "cli.pt")],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "already has a count input" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "cli.pt").exists()


def test_training_pass_scales_a_long_context_as_the_env_wrapper_does(tiny_config):
    model = GQN(tiny_config.replace(view_channels=4)).eval()
    k = tiny_config.context_max
    rng = np.random.default_rng(1)
    images, viewpoints, _ = _scene(tiny_config, rng, k)
    s = tiny_config.image_size
    targets = rng.integers(0, 256, (1, s, s, 3), dtype=np.uint8)
    queries = rng.uniform(-1, 1, (1, tiny_config.viewpoint_dim)).astype(np.float32)
    twice = np.concatenate([images, images], axis=1), np.concatenate([viewpoints, viewpoints], axis=1)
    losses = []
    with torch.no_grad():
        for context in ((images, viewpoints), twice):  # the same views twice: a sum scaled back to once
            out = model(*context, targets, queries, sigma=1.0, generator=torch.Generator().manual_seed(0))
            losses.append(out["loss"])
    torch.testing.assert_close(losses[1], losses[0])


def test_context_draw_max_draws_long_contexts_and_is_validated(tiny_config):
    config = tiny_config.replace(context_max=3, context_draw_max=12, context_sampling="log_uniform")
    assert config.train.most_context == 12
    buffer = fill_buffer(config, frames=20)
    trainer = Trainer(config.replace(count_input=True), buffer)
    ks = [trainer.sample_batch()["context_images"].shape[1] for _ in range(100)]
    assert max(ks) > 3 and max(ks) <= 12 and min(ks) == 1
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    for _ in range(3):
        assert math.isfinite(trainer.step()["loss"])
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    for bad in (-1, True, 2.5):
        with pytest.raises(ValueError, match="context_draw_max"):
            tiny_config.replace(context_draw_max=bad)
    with pytest.raises(ValueError, match="count_input"):
        tiny_config.replace(count_input=1)

from __future__ import annotations

import numpy as np
import pytest
import torch

from world_model import GQN, GQNConfig

B, K = 3, 4


def batch(config, rng=None):
    rng = rng or np.random.default_rng(0)
    s, d = config.image_size, config.viewpoint_dim
    return (
        rng.integers(0, 256, (B, K, s, s, 3), dtype=np.uint8),
        rng.uniform(-1, 1, (B, K, d)).astype(np.float32),
        rng.integers(0, 256, (B, s, s, 3), dtype=np.uint8),
        rng.uniform(-1, 1, (B, d)).astype(np.float32),
    )


@pytest.mark.parametrize("representation", ["pool", "tower"])
@pytest.mark.parametrize("share_core", [True, False])
def test_shapes_and_every_parameter_gets_a_gradient(representation, share_core):
    config = GQNConfig.tiny().replace(representation=representation, share_core=share_core)
    model = GQN(config)
    ci, cv, qi, qv = batch(config)
    out = model(ci, cv, qi, qv, sigma=1.0)
    assert out["mean"].shape == (B, 3, config.image_size, config.image_size)
    assert out["loss"].shape == () and torch.isfinite(out["loss"])
    out["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    r = model.scene_representation(ci, cv)
    assert r.shape == (B, *config.representation_shape)
    assert model.generate(r, qv).shape == (B, 3, config.image_size, config.image_size)
    assert model.reconstruct(r, qv, qi).shape == (B, 3, config.image_size, config.image_size)


@pytest.mark.parametrize("image_size, downsample", [(16, 4), (32, 4), (64, 4), (32, 2)])
def test_other_image_sizes(image_size, downsample):
    config = GQNConfig.tiny().replace(image_size=image_size, downsample=downsample, representation="tower")
    model = GQN(config)
    ci, cv, qi, qv = batch(config)
    assert model(ci, cv, qi, qv, sigma=1.0)["mean"].shape == (B, 3, image_size, image_size)
    assert model.scene_representation(ci, cv).shape == (
        B,
        config.r_channels,
        image_size // downsample,
        image_size // downsample,
    )


def test_scene_representation_is_the_sum_of_view_encodings():
    config = GQNConfig.tiny()
    model = GQN(config)
    ci, cv, _, _ = batch(config)
    r = model.scene_representation(ci, cv)
    per_view = torch.stack([model.encode(ci[:, k], cv[:, k]) for k in range(K)], dim=1)
    torch.testing.assert_close(r, per_view.sum(1), rtol=1e-5, atol=1e-5)


def test_sampling_is_seeded():
    config = GQNConfig.tiny()
    model = GQN(config)
    ci, cv, _, qv = batch(config)
    r = model.scene_representation(ci, cv)
    a = model.generate(r, qv, generator=torch.Generator().manual_seed(1))
    b = model.generate(r, qv, generator=torch.Generator().manual_seed(1))
    c = model.generate(r, qv, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    # The deterministic prediction ignores the generator.
    torch.testing.assert_close(model.generate(r, qv, sample=False), model.generate(r, qv, sample=False))


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda ci, cv, qi, qv: (ci[..., :2], cv, qi, qv), "images"),
        (lambda ci, cv, qi, qv: (ci.astype(np.int32), cv, qi, qv), "dtype"),
        (lambda ci, cv, qi, qv: (ci, cv, qi[:, :8], qv), "images"),
        (lambda ci, cv, qi, qv: (ci, np.where(np.arange(cv.shape[-1]) == 0, np.nan, cv), qi, qv), "NaN"),
        (lambda ci, cv, qi, qv: (ci, cv, qi, np.full_like(qv, np.inf)), "NaN or infinite"),
        (lambda ci, cv, qi, qv: (ci, cv[..., :5], qi, qv), "viewpoints"),
        (lambda ci, cv, qi, qv: (ci[:, :0], cv[:, :0], qi, qv), "K = 0"),
        (lambda ci, cv, qi, qv: (ci, cv[:, :2], qi, qv), "disagree"),
        (lambda ci, cv, qi, qv: (ci, cv, qi[:2], qv), "Batch sizes"),
    ],
)
def test_bad_inputs_raise_and_leave_weights_alone(mutate, match):
    config = GQNConfig.tiny()
    model = GQN(config)
    before = _weights(model)
    with pytest.raises(ValueError, match=match):
        model(*mutate(*batch(config)), sigma=1.0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_bad_sigma_raises():
    config = GQNConfig.tiny()
    with pytest.raises(ValueError, match="sigma"):
        GQN(config)(*batch(config), sigma=float("nan"))


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"image_size": 18}, "divisible"),
        ({"downsample": 3}, "power of two"),
        ({"representation": "pyramid"}, "representation"),
        ({"num_layers": 0}, "num_layers"),
        ({"core_kernel_size": 4}, "odd"),
        ({"context_min": 5, "context_max": 2}, "context_min"),
        ({"sigma_end": -1.0}, "sigma_end"),
    ],
)
def test_bad_config_raises(changes, match):
    with pytest.raises(ValueError, match=match):
        GQNConfig.tiny().replace(**changes)


def test_config_round_trip_and_presets():
    for name in ("tiny", "cpu", "paper"):
        config = GQNConfig.preset(name)
        assert GQNConfig.from_dict(config.to_dict()) == config
    paper = GQNConfig.paper()
    assert (paper.r_channels, paper.num_layers, paper.hidden_channels, paper.core_kernel_size) == (256, 12, 128, 5)
    assert (paper.image_size, paper.batch_size, paper.sigma_anneal_steps, paper.lr_anneal_steps) == (
        64,
        36,
        200_000,
        1_600_000,
    )
    with pytest.raises(ValueError, match="Unknown GQNConfig keys"):
        GQNConfig.from_dict({**GQNConfig.tiny().to_dict(), "r_dim": 3})
    with pytest.raises(ValueError, match="Unknown preset"):
        GQNConfig.preset("huge")

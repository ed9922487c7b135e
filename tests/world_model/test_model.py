from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from world_model import GQN, GQNConfig
from world_model.config import PRESETS, ModelConfig, TrainConfig

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


@pytest.mark.parametrize("representation", ["pool", "tower", "patch"])
@pytest.mark.parametrize("share_core", [True, False])
@pytest.mark.parametrize("inference_channels", [8, 5])
def test_shapes_and_every_parameter_gets_a_gradient(representation, share_core, inference_channels):
    config = GQNConfig.tiny().replace(
        representation=representation, share_core=share_core, inference_channels=inference_channels
    )
    model = GQN(config)
    assert model.generator.inference_cores[0].hidden_channels == inference_channels
    ci, cv, qi, qv = batch(config)
    out = model(ci, cv, qi, qv, sigma=1.0)
    assert out["mean"].shape == (B, 3, config.image_size, config.image_size)
    assert out["loss"].shape == () and torch.isfinite(out["loss"])
    out["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    r = model.scene_representation(ci, cv)
    assert r.shape == (B, *config.representation_shape)
    assert model.render(r, qv, sample=True).shape == (B, 3, config.image_size, config.image_size)
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
    a = model.render(r, qv, generator=torch.Generator().manual_seed(1), sample=True)
    b = model.render(r, qv, generator=torch.Generator().manual_seed(1), sample=True)
    c = model.render(r, qv, generator=torch.Generator().manual_seed(2), sample=True)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    # The deterministic prediction ignores the generator.
    torch.testing.assert_close(model.render(r, qv), model.render(r, qv))


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
        ({"representation": "tower", "downsample": 1}, "paper tower"),
        ({"tower_layout": "paper"}, "Unknown GQNConfig fields"),
        ({"grad_clip": -1.0}, "grad_clip"),
        ({"inference_channels": 0}, "inference_channels"),
        ({"view_channels": -1}, "view_channels"),
        ({"seed": 1.5}, "seed"),
        ({"view_dropout": 1.5}, "view_dropout"),
        ({"view_dropout": True}, "view_dropout"),
        ({"view_dropout": 0.5}, "view_channels = 0"),  # tiny has no nearest-view input to drop
    ],
)
def test_bad_config_raises(changes, match):
    with pytest.raises(ValueError, match=match):
        GQNConfig.tiny().replace(**changes)


def test_config_round_trip_and_presets():
    for name in ("tiny", "cpu", "paper"):
        config = GQNConfig.preset(name)
        assert GQNConfig.from_dict(config.to_dict()) == config
        assert pickle.loads(pickle.dumps(config)) == config  # the attribute pass-through survives pickling
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
    with pytest.raises(ValueError, match="Unknown ModelConfig keys"):
        GQNConfig.from_dict({"model": {"r_dim": 3}})
    with pytest.raises(ValueError, match="Unknown preset"):
        GQNConfig.preset("huge")
    missing = GQNConfig.from_dict({"model": {"image_size": 16}})  # missing keys: defaults
    assert missing == GQNConfig(ModelConfig(image_size=16), TrainConfig())
    # The defaults are the cpu preset; the others are overlays of the fields PRESETS lists.
    assert GQNConfig() == GQNConfig.cpu() and PRESETS["cpu"] == {}
    for name in ("tiny", "paper"):
        assert GQNConfig.preset(name).changes_from(GQNConfig()) == PRESETS[name]
    assert set(GQNConfig.tiny().to_dict()) == {"model", "train"}
    assert GQNConfig.cpu().image_size == GQNConfig.cpu().model.image_size  # reads go through to the parts
    assert GQNConfig.cpu().seed == GQNConfig.cpu().train.seed
    with pytest.raises(AttributeError, match="no field 'r_dim'"):
        _ = GQNConfig.cpu().r_dim
    scaled = GQNConfig.cpu().with_anneal_steps(300)
    assert (scaled.sigma_anneal_steps, scaled.lr_anneal_steps) == (300, 600)
    assert scaled.architecture() == GQNConfig.cpu().architecture()
    tower = GQNConfig.tiny().replace(representation="tower", r_channels=5, image_size=32, downsample=4)
    assert tower.representation_shape == (5, 8, 8) and tower.representation_dim == 5 * 8 * 8
    assert tower.replace(representation="pool").representation_shape == (5, 1, 1)


@pytest.mark.parametrize("kernel_size, size", [(3, 4), (5, 8), (5, 2), (1, 3)])
def test_broadcast_conv_equals_convolving_the_broadcast_vector(kernel_size, size):
    from world_model.generator import broadcast_conv, tap_mask

    gen = torch.Generator().manual_seed(0)
    vector, weight = torch.randn(3, 5, generator=gen), torch.randn(6, 5, kernel_size, kernel_size, generator=gen)
    expected = torch.nn.functional.conv2d(
        vector[:, :, None, None].expand(-1, -1, size, size), weight, padding=kernel_size // 2
    )
    torch.testing.assert_close(broadcast_conv(vector, weight, tap_mask(size, kernel_size)), expected)


def test_convlstm_fixed_gates_and_step_equal_the_plain_cell():
    from world_model.generator import ChannelLayout, ConvLSTMCell, tap_mask

    torch.manual_seed(0)
    layout = ChannelLayout(("dyn", 2), ("vec", 3), ("fmap", 4), ("vec2", 1), ("vec3", 2))
    cell = ConvLSTMCell(in_channels=layout.channels, hidden_channels=5, kernel_size=3)
    with torch.no_grad():
        cell.conv.bias.normal_()
    b, s = 2, 6
    dyn, vec, fmap = torch.randn(b, 2, s, s), torch.randn(b, 3), torch.randn(b, 4, s, s)
    vec2, vec3 = torch.randn(b, 1), torch.randn(b, 2)
    state = (torch.randn(b, 5, s, s), torch.randn(b, 5, s, s))
    grid = [t[:, :, None, None].expand(-1, -1, s, s) for t in (vec, vec2, vec3)]
    plain = cell(torch.cat([dyn, grid[0], fmap, *grid[1:]], dim=1), state)
    parts = layout.parts(vec3=vec3, fmap=fmap, vec=vec, vec2=vec2)  # any order in, layout order out
    assert [(p.start, p.stop) for p, _ in parts] == [(2, 5), (5, 9), (9, 12)]  # vec2 and vec3 joined
    fixed = cell.fixed_gates(parts, tap_mask(s, 3))
    split = cell.step(fixed, dyn, cell.step_weight([layout.slices["dyn"]]), state)
    for a, e in zip(split, plain, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="Unknown inputs"):
        layout.parts(z=vec)
    with pytest.raises(ValueError, match="'vec' has 2 channels, expected 3"):
        layout.parts(vec=vec3)


@pytest.mark.parametrize("representation", ["pool", "tower"])
@pytest.mark.parametrize("downsample", [2, 4])
def test_paper_tower(representation, downsample):
    config = GQNConfig.tiny().replace(representation=representation, downsample=downsample)
    model = GQN(config)
    ci, cv, qi, qv = batch(config)
    out = model(ci, cv, qi, qv, sigma=1.0)
    out["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.scene_representation(ci, cv).shape == (B, *config.representation_shape)
    assert any(name.startswith("representation.") and "skip2" in name for name, _ in model.named_parameters())


def test_float_images_outside_unit_range_are_rejected():
    config = GQNConfig.tiny()
    model = GQN(config)
    ci, cv, qi, qv = batch(config)
    as_float = torch.from_numpy(ci).movedim(-1, -3).float()  # (B, K, 3, S, S) in [0, 255]
    with pytest.raises(ValueError, match=r"\[0, 1\], got values in \[0, 255\]"):
        model.scene_representation(as_float, cv)
    torch.testing.assert_close(
        model.scene_representation(as_float / 255, cv), model.scene_representation(ci, cv), rtol=0, atol=0
    )


def test_construction_is_seeded_and_leaves_the_global_rng_alone():
    config = GQNConfig.tiny()
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a, b = GQN(config), GQN(config)
    assert torch.equal(torch.rand(3), expected_next)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    c = GQN(config.replace(seed=1))
    assert any(not torch.equal(va, vc) for va, vc in zip(a.state_dict().values(), c.state_dict().values(), strict=True))


def test_overrides_from_strings_are_typed_and_checked():
    config = GQNConfig.cpu().with_overrides(
        ["num_layers=4", "share_core=false", "lr_start=1e-3", "representation=tower"]
    )
    assert (config.num_layers, config.share_core, config.lr_start, config.representation) == (4, False, 1e-3, "tower")
    assert GQNConfig.cpu().with_overrides([]) == GQNConfig.cpu()
    for bad, message in [
        ("num_layers", "FIELD=VALUE"),
        ("depth=3", "FIELD=VALUE"),
        ("num_layers=four", "must be of type int"),
        ("share_core=maybe", "true or false"),
        ("num_layers=0", "positive integer"),  # the config's own validation
    ]:
        with pytest.raises(ValueError, match=message):
            GQNConfig.cpu().with_overrides([bad])


def test_numpy_patch_encoder_matches_torch_and_follows_weight_updates():
    from world_model.representation import NumpyPatchEncoder

    config = GQNConfig.tiny().replace(representation="patch")
    model = GQN(config)
    net = model.representation
    encoder = NumpyPatchEncoder(net)
    rng = np.random.default_rng(0)
    size = config.image_size
    images = rng.integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    viewpoints = rng.uniform(-1, 1, (3, config.viewpoint_dim)).astype(np.float32)

    def torch_pass():
        with torch.no_grad():
            x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
            patches = net.patch_map(x)
            return net.head(patches, torch.from_numpy(viewpoints)).numpy(), patches.permute(0, 3, 1, 2).numpy()

    for _ in range(2):
        r, patches = encoder(images, viewpoints)
        r_torch, patches_torch = torch_pass()
        assert r.shape == r_torch.shape and patches.shape == patches_torch.shape
        np.testing.assert_allclose(r, r_torch, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(patches, patches_torch, rtol=1e-5, atol=1e-6)
        # An optimizer step changes the weights in place: the next call must see it.
        optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
        net(torch.rand(2, 3, size, size), torch.rand(2, config.viewpoint_dim)).square().sum().backward()
        optimizer.step()
        assert not np.allclose(encoder(images, viewpoints)[0], r)


def test_representation_size_is_a_deprecated_name_of_representation_dim():
    config = GQNConfig.tiny()
    with pytest.warns(DeprecationWarning, match="representation_dim"):
        assert config.representation_size == config.representation_dim == int(np.prod(config.representation_shape))

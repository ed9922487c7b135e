"""The generator's optional second input: the context view nearest the query (config.view_channels)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.world_model.conftest import fill_buffer
from tests.world_model.test_model import B, K, batch
from world_model import GQN, GQNConfig, Trainer
from world_model.evaluation import evaluate
from world_model.model import drop_views

VIEW = GQNConfig.tiny().replace(view_channels=6)


@pytest.mark.parametrize("share_core", [True, False])
def test_every_parameter_of_a_view_model_gets_a_gradient(share_core):
    model = GQN(VIEW.replace(share_core=share_core))
    ci, cv, qi, qv = batch(VIEW)
    out = model(ci, cv, qi, qv, sigma=1.0)
    out["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    r = model.scene_representation(ci, cv)
    assert model.render(r, qv, context=(ci, cv), sample=True).shape == (B, 3, VIEW.image_size, VIEW.image_size)
    assert model.reconstruct(r, qv, qi, context=(ci, cv)).shape == (B, 3, VIEW.image_size, VIEW.image_size)


def test_nearest_view_picks_the_context_frame_nearest_each_query():
    model = GQN(VIEW)
    ci, cv, _, _ = batch(VIEW)
    pick = np.array([3, 0, 2])
    qv = cv[np.arange(B), pick] + 0.01  # each query next to one context view
    images, viewpoints = model.nearest_view(ci, cv, qv)
    np.testing.assert_array_equal(viewpoints.numpy(), cv[np.arange(B), pick])
    want = torch.from_numpy(ci[np.arange(B), pick]).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(images, want)
    # One scene's context serves every query.
    images, viewpoints = model.nearest_view(ci[:1], cv[:1], cv[0, [2, 1]])
    np.testing.assert_array_equal(viewpoints.numpy(), cv[0, [2, 1]])


def test_with_zero_weights_on_the_view_inputs_it_is_the_plain_model():
    """The documented channel layout: the plain core's inputs first, the view inputs appended before h."""
    plain, view = GQN(GQNConfig.tiny()), GQN(VIEW)
    state = view.state_dict()
    for key, value in plain.state_dict().items():
        if state[key].shape == value.shape:
            state[key] = value
        else:  # the generator core: [z, v, r | view map, view offset | h]
            old_in = value.shape[1] - VIEW.hidden_channels
            state[key] = torch.cat(
                [value[:, :old_in], torch.zeros_like(state[key][:, old_in : -VIEW.hidden_channels]), value[:, old_in:]],
                dim=1,
            )
    view.load_state_dict(state)
    ci, cv, qi, qv = batch(VIEW)
    gen = torch.Generator
    a = plain(ci, cv, qi, qv, sigma=1.0, generator=gen().manual_seed(0))
    b = view(ci, cv, qi, qv, sigma=1.0, generator=gen().manual_seed(0))
    torch.testing.assert_close(a["loss"], b["loss"])
    r = plain.scene_representation(ci, cv)
    torch.testing.assert_close(plain.render(r, qv), view.render(r, qv, context=(ci, cv)))


def test_the_view_changes_the_rendering():
    model = GQN(VIEW)
    ci, cv, _, qv = batch(VIEW)
    r = model.scene_representation(ci, cv)
    a = model.render(r, qv, context=(ci, cv))
    b = model.render(r, qv, context=(255 - ci, cv))
    assert not torch.allclose(a, b)


def test_one_scene_context_serves_every_query():
    model = GQN(VIEW)
    ci, cv, _, qv = batch(VIEW)
    r = model.scene_representation(ci[:1], cv[:1]).expand(B, -1, -1, -1)
    shared = model.render(r, qv, context=(ci[:1], cv[:1]))
    repeated = model.render(r, qv, context=(np.repeat(ci[:1], B, axis=0), np.repeat(cv[:1], B, axis=0)))
    torch.testing.assert_close(shared, repeated, rtol=0, atol=0)


def test_a_view_model_needs_a_well_formed_context():
    model = GQN(VIEW)
    ci, cv, qi, qv = batch(VIEW)
    r = model.scene_representation(ci, cv)
    with pytest.raises(ValueError, match="context view nearest each query"):
        model.render(r, qv)
    with pytest.raises(ValueError, match="context view nearest each query"):
        model.reconstruct(r, qv, qi)
    with pytest.raises(ValueError, match="2 contexts but 3 query viewpoints"):
        model.render(r, qv, context=(ci[:2], cv[:2]))
    with pytest.raises(ValueError, match="NaN"):
        model.render(r, qv, context=(ci, cv * np.nan))
    with pytest.raises(ValueError, match="a pair"):
        model.render(r, qv, context=ci)
    with pytest.raises(ValueError, match="query viewpoints"):
        model.nearest_view(ci, cv, qv[:2])
    # A plain model ignores a context.
    plain = GQN(GQNConfig.tiny())
    r = plain.scene_representation(ci, cv)
    torch.testing.assert_close(plain.render(r, qv), plain.render(r, qv, context=(ci, cv)), rtol=0, atol=0)


@pytest.mark.parametrize("value", [-1, True, 1.5])
def test_view_channels_is_validated(value):
    with pytest.raises(ValueError, match="view_channels"):
        GQNConfig.tiny().replace(view_channels=value)


def test_view_channels_is_architecture():
    assert "view_channels" in GQNConfig.tiny().architecture()


def test_evaluation_hands_a_view_model_the_nearest_context_view():
    """A view model whose generator copies its view input scores exactly the nearest-view baseline."""
    model = GQN(VIEW)
    model.generator.run = lambda r, viewpoints, view=None, **kwargs: (view[0], None)
    rng = np.random.default_rng(1)
    s = VIEW.image_size
    scenes = [
        {
            "context_images": rng.integers(0, 256, (K, s, s, 3), dtype=np.uint8),
            "context_viewpoints": rng.uniform(-1, 1, (K, 7)).astype(np.float32),
            "query_images": rng.integers(0, 256, (4, s, s, 3), dtype=np.uint8),
            "query_viewpoints": rng.uniform(-1, 1, (4, 7)).astype(np.float32),
        }
        for _ in range(2)
    ]
    results = evaluate(model, scenes, mean_image=np.full((s, s, 3), 0.5))
    assert results["mse_model"] == pytest.approx(results["mse_nearest"], rel=1e-6)


def test_a_dropped_view_renders_from_r_alone():
    """drop_view takes the nearest view away: those queries no longer depend on the context's pixels."""
    model = GQN(VIEW)
    ci, cv, _, qv = batch(VIEW)
    r = model.scene_representation(ci, cv)
    drop = np.array([True, False, True])
    a = model.render(r, qv, context=(ci, cv), drop_view=drop)
    b = model.render(r, qv, context=(255 - ci, cv), drop_view=drop)  # same r, other pixels
    torch.testing.assert_close(a[drop], b[drop])
    assert not torch.allclose(a[~drop], b[~drop])
    kept = model.render(r, qv, context=(ci, cv))
    torch.testing.assert_close(a[~drop], kept[~drop])
    images, viewpoints = model.nearest_view(ci, cv, qv)
    dropped_images, dropped_viewpoints = drop_views((images, viewpoints), torch.as_tensor(qv), drop)
    assert dropped_images[drop].abs().sum() == 0
    torch.testing.assert_close(dropped_viewpoints[drop], torch.as_tensor(qv)[drop])  # offset 0
    with pytest.raises(ValueError, match="one flag per query"):
        model.render(r, qv, context=(ci, cv), drop_view=drop[:2])
    with pytest.raises(ValueError, match="drop_view is for a model with a nearest-view input"):
        plain = GQN(GQNConfig.tiny())
        plain.render(plain.scene_representation(ci, cv), qv, drop_view=drop)


def test_view_dropout_marks_a_share_of_training_queries():
    """The trainer draws ``drop_view`` per query from its seeded generator; the training pass reads it."""
    config = VIEW.replace(view_dropout=0.5, batch_size=64)
    sampler = fill_buffer(config)
    trainer = Trainer(config, sampler)
    batch_ = trainer.sample_batch()
    assert batch_["drop_view"].dtype == bool and 20 < batch_["drop_view"].sum() < 44
    assert np.isfinite(trainer.step()["loss"])
    assert "drop_view" not in Trainer(config.replace(view_dropout=0.0), sampler).sample_batch()

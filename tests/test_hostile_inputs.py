"""Property-based tests (hypothesis): bad inputs get a clear error and change nothing.

Each property draws many malformed inputs (a bounded number of examples, so the
suite stays fast) and checks that the library raises ``ValueError`` (or its
subclass ``CheckpointError``) with a message, never a silent NaN, a hang or a
model whose weights changed.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tests.world_model.conftest import fill_buffer
from world_model import GQN, CheckpointError, GQNConfig, Trainer, load_checkpoint, load_weights

CONFIG = GQNConfig.tiny()
S, D = CONFIG.image_size, CONFIG.viewpoint_dim
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), f"{name} changed"


@pytest.fixture(scope="module")
def model() -> GQN:
    return GQN(CONFIG)


def good_context(k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (1, k, S, S, 3), dtype=np.uint8), rng.uniform(-1, 1, (1, k, D)).astype(np.float32)


non_finite = st.sampled_from([math.nan, math.inf, -math.inf])


@FAST
@given(
    k=st.integers(1, 3),
    where=st.tuples(st.integers(0, 2), st.integers(0, D - 1)),
    bad=non_finite,
)
def test_non_finite_viewpoints_are_refused_everywhere(model, k, where, bad):
    images, vps = good_context(3)
    vps = vps[:, :k].copy()
    row = min(where[0], k - 1)
    vps[0, row, where[1]] = bad
    before = weights(model)
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.scene_representation(images[:, :k], vps)
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.render(torch.zeros(1, *CONFIG.representation_shape), vps[0, row : row + 1])
    r = torch.zeros(1, *CONFIG.representation_shape)
    r.view(-1)[where[1] % r.numel()] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.render(r, np.zeros((1, D), dtype=np.float32))
    assert_unchanged(model, before)


@FAST
@given(
    shape=hnp.array_shapes(min_dims=0, max_dims=6, min_side=0, max_side=20),
    dtype=st.sampled_from([np.uint8, np.int16, np.float32, np.float64, np.bool_]),
)
def test_malformed_images_get_a_clear_error(model, shape, dtype):
    good = (1, 2, S, S, 3)
    assume(not (shape == good and dtype == np.uint8))
    assume(not (len(shape) == 5 and shape[2:] == (3, S, S) and dtype in (np.float32, np.float64)))
    images = np.zeros(shape, dtype=dtype)
    _, vps = good_context(2)
    before = weights(model)
    with pytest.raises(ValueError) as err:
        model.scene_representation(images, vps)
    assert str(err.value)
    assert_unchanged(model, before)


@FAST
@given(
    value=st.one_of(
        st.text(max_size=5),
        st.lists(st.text(max_size=3), min_size=D, max_size=D),
        st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=0, max_size=D + 3),
        st.none(),
        st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    )
)
def test_viewpoints_of_the_wrong_type_or_length_get_a_clear_error(model, value):
    assume(not (isinstance(value, list) and len(value) == D and all(isinstance(v, float) for v in value)))
    before = weights(model)
    with pytest.raises(ValueError):
        model.render(torch.zeros(1, *CONFIG.representation_shape), [value])
    assert_unchanged(model, before)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_damaged_checkpoints_raise_or_load_the_same_weights(tmp_path_factory, data):
    """A flipped byte, a truncation or garbage: CheckpointError, or (bytes nobody reads) the same model."""
    folder = tmp_path_factory.mktemp("ckpt")
    path = folder / "c.pt"
    trainer = Trainer(CONFIG, fill_buffer(CONFIG))
    trainer.step()
    trainer.save(path)
    good = path.read_bytes()
    how = data.draw(st.sampled_from(["flip", "truncate", "garbage"]))
    if how == "flip":
        at = data.draw(st.integers(0, len(good) - 1))
        bad = bytearray(good)
        bad[at] ^= data.draw(st.integers(1, 255))
    elif how == "truncate":
        bad = good[: data.draw(st.integers(0, len(good) - 1))]
    else:
        bad = data.draw(st.binary(max_size=2000))
    path.write_bytes(bytes(bad))
    target = GQN(CONFIG.replace(seed=99))
    before = weights(target)
    try:
        loaded = load_checkpoint(path)
    except CheckpointError as err:
        assert str(err)
        with pytest.raises(CheckpointError):
            load_weights(target, path)
        assert_unchanged(target, before)
        return
    reference = trainer.state()
    assert loaded["step"] == reference["step"]
    for name, value in reference["model"].items():
        assert torch.equal(loaded["model"][name], value), f"{name} loaded silently different"


@FAST
@given(
    action=st.one_of(
        st.integers(-(10**6), 10**6),
        st.floats(allow_nan=True),
        st.text(max_size=3),
        st.none(),
        hnp.arrays(np.int64, hnp.array_shapes(min_dims=1, max_dims=2, max_side=3)),
    )
)
def test_invalid_actions_are_refused_and_leave_the_agent_in_place(scene_env, action):
    space = scene_env.action_space
    assume(not space.contains(action))
    before = scene_env.unwrapped.pose
    with pytest.raises(ValueError, match="Invalid action"):
        scene_env.unwrapped.step(action)
    assert scene_env.unwrapped.pose == before


@pytest.fixture(scope="module")
def scene_env():
    env = gym.make("GQNMazeScene-v0", num_rows=2, num_cols=2, image_size=16, map_size=32)
    env.reset(seed=0)
    yield env
    env.close()


@settings(max_examples=20, deadline=None)
@given(
    kwargs=st.dictionaries(
        st.sampled_from(["num_rows", "num_cols", "image_size", "room_size", "gap_size", "max_episode_steps"]),
        st.one_of(st.integers(-3, 0), st.floats(max_value=0.0), st.just(math.nan), st.text(max_size=2), st.just([])),
        min_size=1,
        max_size=2,
    )
)
def test_bad_env_kwargs_get_a_clear_error(kwargs):
    # gym.make reads max_episode_steps=-1 as "no TimeLimit wrapper" (Gymnasium's documented meaning)
    assume(kwargs.get("max_episode_steps") != -1)
    with pytest.raises((ValueError, TypeError)) as err:
        env = gym.make("GQNMazeScene-v0", **kwargs)
        env.close()
    assert str(err.value)


@settings(max_examples=15, deadline=None)
@given(poison=st.lists(st.booleans(), min_size=4, max_size=4))
def test_non_finite_losses_are_skipped_with_the_weights_kept(poison):
    """Whichever steps produce a non-finite loss are skipped and counted; the others train."""
    trainer = Trainer(CONFIG, fill_buffer(CONFIG))
    forward = trainer._forward

    def maybe_poisoned(batch, sigma):
        out = forward(batch, sigma)
        if poison[trainer.step_count]:
            out["loss"] = out["loss"] * float("nan")
        return out

    trainer._forward = maybe_poisoned
    for bad in poison:
        before = weights(trainer.model)
        stats = trainer.step()
        assert stats["skipped"] == float(bad)
        if bad:
            assert_unchanged(trainer.model, before)
        else:
            assert any(not torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())
    assert trainer.skipped_steps == sum(poison)
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values())


@pytest.mark.parametrize(
    ("device", "match"),
    [("nonsense", "must name a torch device"), ("cuda:7", "not available"), ("xla", "not available")],
)
def test_an_unusable_device_is_named_as_such_not_as_a_corrupt_checkpoint(device, match):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that GPU")
    with pytest.raises(ValueError, match=match) as info:
        gym.make("GQNMaze-v0", device=device)
    assert not isinstance(info.value, CheckpointError)

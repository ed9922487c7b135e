"""The map head (ModelConfig.map_channels): r channels for the generator that agents never observe."""

from __future__ import annotations

import re
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from world_model import GQN, CheckpointError, Trainer, load_model, save_checkpoint
from world_model.checkpoint import add_map_head
from world_model.representation import NumpyPatchEncoder, place_on_floor

MAP = 6


@pytest.fixture
def plain_checkpoint(tiny_config, tmp_path):
    config = tiny_config.replace(view_channels=4)  # the nearest-view input too, as the bundled model has
    path = tmp_path / "plain.pt"
    save_checkpoint(path, model=GQN(config), step=7)
    return path


def _frames(config, rng, batch=2, views=3):
    s = config.image_size
    images = rng.integers(0, 256, (batch, views, s, s, 3), dtype=np.uint8)
    viewpoints = rng.uniform(-1, 1, (batch, views, config.viewpoint_dim)).astype(np.float32)
    return images, viewpoints


def test_config_validates_map_channels(tiny_config):
    assert tiny_config.replace(map_channels=MAP).representation_shape == (tiny_config.r_channels + MAP, 1, 1)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="map_channels"):
            tiny_config.replace(map_channels=bad)
    with pytest.raises(ValueError, match="map_channels needs the 'patch'"):
        tiny_config.replace(representation="pool", map_channels=MAP)


@pytest.mark.parametrize("layout", ["vector", "grid", "coverage"])
def test_add_map_head_renders_exactly_as_the_model_it_came_from(plain_checkpoint, tmp_path, layout):
    old = load_model(plain_checkpoint)
    add_map_head(plain_checkpoint, tmp_path / "map.pt", MAP, seed=3, layout=layout)
    new = load_model(tmp_path / "map.pt")
    config = old.config
    assert (new.config.map_channels, new.config.map_layout) == (MAP, layout)
    side = 1 if layout == "vector" else config.hidden_size
    per_cell = MAP + (layout == "coverage")  # a coverage head also sums the views' footprints
    assert new.config.representation_shape == (config.r_channels + per_cell * side * side, 1, 1)
    rng = np.random.default_rng(0)
    images, viewpoints = _frames(config, rng)
    queries = rng.uniform(-1, 1, (2, config.viewpoint_dim)).astype(np.float32)
    targets = rng.integers(0, 256, (2, config.image_size, config.image_size, 3), dtype=np.uint8)
    with torch.no_grad():
        r_old, r_new = old.scene_representation(images, viewpoints), new.scene_representation(images, viewpoints)
        torch.testing.assert_close(r_new[:, : config.r_channels], r_old, rtol=0, atol=0)
        assert r_new[:, config.r_channels :].abs().sum() > 0  # the map head computes something...
        context = (images, viewpoints)
        torch.testing.assert_close(  # ...that the generator, its new weights at zero, does not read yet
            new.render(r_new, queries, context=context), old.render(r_old, queries, context=context)
        )
        losses = []
        for model in (old, new):
            generator = torch.Generator().manual_seed(0)
            losses.append(model(images, viewpoints, targets, queries, sigma=1.0, generator=generator)["loss"])
        torch.testing.assert_close(losses[0], losses[1])


def test_add_map_head_refuses_bad_input_and_writes_nothing(plain_checkpoint, tmp_path, tiny_config):
    add_map_head(plain_checkpoint, tmp_path / "map.pt", MAP)
    with pytest.raises(CheckpointError, match="already has a map head"):
        add_map_head(tmp_path / "map.pt", tmp_path / "twice.pt", MAP)
    with pytest.raises(ValueError, match="positive integer"):
        add_map_head(plain_checkpoint, tmp_path / "zero.pt", 0)
    tower = tmp_path / "tower.pt"
    save_checkpoint(tower, model=GQN(tiny_config.replace(representation="pool")))
    with pytest.raises(ValueError, match="patch"):
        add_map_head(tower, tmp_path / "pool.pt", MAP)
    assert not any((tmp_path / name).exists() for name in ("twice.pt", "zero.pt", "pool.pt"))
    result = subprocess.run(
        [sys.executable, "-m", "gqn_env.cli", "add-map", str(tmp_path / "map.pt"), str(tmp_path / "cli.pt")],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "already has a map head" in result.stderr
    assert "Traceback" not in result.stderr


def test_replace_drops_the_old_map_head_and_keeps_everything_else(plain_checkpoint, tmp_path):
    add_map_head(plain_checkpoint, tmp_path / "vector.pt", MAP, seed=3)
    trained = load_model(tmp_path / "vector.pt")
    with torch.no_grad():  # stand-in for training: the map head and the generator's map inputs now matter
        for name, tensor in trained.named_parameters():
            if name.startswith("representation.map_head.") or name.endswith("_cores.0.conv.weight"):
                tensor.add_(torch.randn(tensor.shape, generator=torch.Generator().manual_seed(1)))
    save_checkpoint(tmp_path / "vector.pt", model=trained, step=9)

    out = tmp_path / "coverage.pt"
    result = subprocess.run(
        [sys.executable, "-m", "gqn_env.cli", "add-map", str(tmp_path / "vector.pt"), str(out)]
        + ["--channels", str(MAP + 1), "--layout", "coverage", "--replace"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    new = load_model(out)
    assert (new.config.map_channels, new.config.map_layout) == (MAP + 1, "coverage")
    old_weights, new_weights = trained.state_dict(), new.state_dict()
    kept = [
        n
        for n in old_weights
        if not (n.startswith("representation.map_head.") or re.search(r"_cores\.\d+\.conv\.weight", n))
    ]
    assert len(kept) > 10
    for name in kept:  # everything but the old head and the cores' input weights, bit for bit
        torch.testing.assert_close(new_weights[name], old_weights[name], rtol=0, atol=0)
    # with the old head's inputs gone and the new ones at zero, it renders as the trained model
    # would with its map input silenced
    silenced = load_model(tmp_path / "vector.pt")
    with torch.no_grad():  # a vector head's channels enter the cores after r's, in the "r" input
        for gen in ("generator", "inference"):
            start = getattr(silenced.generator, f"{gen}_inputs").slices["r"].start + silenced.config.r_channels
            for core in getattr(silenced.generator, f"{gen}_cores"):
                core.conv.weight[:, start : start + MAP] = 0
    config = new.config
    rng = np.random.default_rng(0)
    images, viewpoints = _frames(config, rng)
    queries = rng.uniform(-1, 1, (2, config.viewpoint_dim)).astype(np.float32)
    with torch.no_grad():
        r_old, r_new = silenced.scene_representation(images, viewpoints), new.scene_representation(images, viewpoints)
        torch.testing.assert_close(r_new[:, : config.r_channels], r_old[:, : config.r_channels], rtol=0, atol=0)
        context = (images, viewpoints)
        rendered = new.render(r_new, queries, context=context)
        torch.testing.assert_close(rendered, silenced.render(r_old, queries, context=context))
        assert not torch.allclose(rendered, trained.render(r_old, queries, context=context))


@pytest.mark.parametrize("layout", ["vector", "grid", "coverage"])
def test_freeze_representation_still_trains_the_map_head(tiny_config, tiny_buffer, layout):
    config = tiny_config.replace(map_channels=MAP, map_layout=layout, freeze_representation=True)
    trainer = Trainer(config, tiny_buffer)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    for _ in range(3):
        trainer.step()
    after = trainer.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    observed = [k for k in before if k.startswith("representation.") and ".map_head." not in k]
    assert observed and not changed & set(observed)  # what agents read is fixed
    assert any(".map_head." in k for k in changed) and any(k.startswith("generator.") for k in changed)


def test_place_on_floor_puts_what_the_camera_sees_in_front_of_it():
    side = 8
    near_centre = torch.zeros(1, 1, side, side)
    near_centre[0, 0, 0:2, 3:5] = 1.0  # just ahead of the camera
    near_left = torch.zeros(1, 1, side, side)
    near_left[0, 0, 0:3, 0:2] = 1.0  # ahead and to the left

    def cells(view, yaw):
        viewpoint = torch.tensor([[0.0, 0.0, 0.0, np.cos(yaw), np.sin(yaw), 1.0, 0.0]], dtype=torch.float32)
        rows, cols = torch.nonzero(place_on_floor(view, viewpoint)[0, 0] > 0.1, as_tuple=True)
        return set(rows.tolist()), set(cols.tolist())

    # The floor grid: columns along +x, rows along +z, cell 2 * MAP_EXTENT / 8 = 0.3 wide, the origin at 4.
    assert cells(near_centre, 0.0) == ({3, 4}, {4})  # yaw 0 looks along +x: just right of the centre column
    assert cells(near_centre, np.pi / 2) == ({3}, {3, 4})  # turned left: along -z, the row above
    assert cells(near_left, 0.0) == ({2}, {4})  # the camera's left, looking along +x, is -z
    assert cells(near_centre, np.pi)[1] == {3}  # looking along -x


def test_numpy_encoder_computes_the_map_channels_too(tiny_config):
    model = GQN(tiny_config.replace(map_channels=MAP))
    rng = np.random.default_rng(1)
    images, viewpoints = _frames(model.config, rng, batch=1)
    r, _ = NumpyPatchEncoder(model.representation)(images[0], viewpoints[0])
    with torch.no_grad():
        r_torch = model.encode(images[0], viewpoints[0]).numpy()
    assert r.shape == r_torch.shape == (3, tiny_config.r_channels + MAP, 1, 1)
    np.testing.assert_allclose(r, r_torch, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", ["grid", "coverage"])
def test_numpy_encoder_gives_a_grid_models_observed_channels_and_leaves_its_map_to_torch(tiny_config, layout):
    model = GQN(tiny_config.replace(map_channels=MAP, map_layout=layout))
    encoder = NumpyPatchEncoder(model.representation)
    images, viewpoints = _frames(model.config, np.random.default_rng(2), batch=1)
    with pytest.raises(ValueError, match="map_head=False"):
        encoder(images[0], viewpoints[0])
    r, patches = encoder(images[0], viewpoints[0], map_head=False)
    with torch.no_grad():
        r_torch = model.encode(images[0], viewpoints[0]).numpy()
    channels = tiny_config.r_channels
    assert r.shape == (3, channels, 1, 1)
    np.testing.assert_allclose(r, r_torch[:, :channels], rtol=1e-5, atol=1e-6)


def test_gqn_maze_with_a_coverage_head_steps_in_numpy_and_imagines_with_the_whole_map(tiny_config, tmp_path):
    torch.manual_seed(0)
    config = tiny_config.replace(view_channels=4, map_channels=MAP, map_layout="coverage")
    save_checkpoint(tmp_path / "cov.pt", model=GQN(config).eval())
    scene = {"num_rows": 2, "num_cols": 2, "map_size": 64}
    lazy = gym.make("GQNMaze-v0", checkpoint=str(tmp_path / "cov.pt"), **scene)
    eager = gym.make("GQNMaze-v0", checkpoint=str(tmp_path / "cov.pt"), obs_keys=("patches", "map"), **scene)
    try:
        states = [env.get_wrapper_attr("state") for env in (lazy, eager)]
        assert states[0]._numpy_encoder is not None  # the per-step path leaves the grid to imagination
        assert states[1]._numpy_encoder is None  # observing the map encodes it with torch at every step
        for env in (lazy, eager):
            env.reset(seed=4)
            for action in (2, 2, 0, 2, 1):
                env.step(action)
        (map_lazy, spread_lazy), (map_eager, spread_eager) = [
            env.get_wrapper_attr("imagine_top_down")() for env in (lazy, eager)
        ]
        # the same map whether its grid was encoded at every step or when imagination needed it
        np.testing.assert_allclose(map_lazy.astype(np.float32), map_eager.astype(np.float32), atol=1)
        np.testing.assert_allclose(spread_lazy, spread_eager, atol=1e-4)
        assert spread_lazy.max() > 0
    finally:
        lazy.close()
        eager.close()


def test_gqn_maze_observes_the_first_r_channels_and_imagines_from_all(tiny_config, tmp_path):
    torch.manual_seed(0)
    plain = GQN(tiny_config).eval()
    save_checkpoint(tmp_path / "plain.pt", model=plain)
    add_map_head(tmp_path / "plain.pt", tmp_path / "map.pt", MAP)
    scene = {"num_rows": 2, "num_cols": 2, "map_size": 64, "obs_keys": ("representation", "view_encoding")}
    envs = [gym.make("GQNMaze-v0", checkpoint=str(tmp_path / name), **scene) for name in ("plain.pt", "map.pt")]
    try:
        for env in envs:
            assert env.observation_space["representation"].shape == (tiny_config.r_channels,)
        trajectories = []
        for env in envs:
            obs, _ = env.reset(seed=0)
            steps = [obs]
            for action in (2, 0, 2):
                steps.append(env.step(action)[0])
            trajectories.append(steps)
            assert env.observation_space.contains(steps[-1])
        for a, b in zip(*trajectories, strict=True):  # the map head changes nothing an agent sees
            for key in a:
                np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6)
        assert envs[1].get_wrapper_attr("state").sums.shape[1] == tiny_config.r_channels + MAP
        # Imagination renders from the whole sum; an untrained map head's channels are not read yet.
        pose = envs[0].unwrapped.agent.pos
        images = [env.get_wrapper_attr("imagine")([pose[0], pose[2], 0.5]) for env in envs]
        np.testing.assert_allclose(images[0].astype(int), images[1].astype(int), atol=1)
    finally:
        for env in envs:
            env.close()


@pytest.mark.parametrize("layout", ["vector", "grid", "coverage"])
def test_the_map_key_is_the_episode_mean_of_the_map_channels(tiny_config, tmp_path, layout):
    plain = tmp_path / "plain.pt"
    save_checkpoint(plain, model=GQN(tiny_config))
    add_map_head(plain, tmp_path / "map.pt", MAP, layout=layout)
    side = tiny_config.hidden_size
    shape = {"vector": (MAP,), "grid": (MAP, side, side), "coverage": (MAP + 1, side, side)}[layout]
    scene = {"num_rows": 2, "num_cols": 2, "map_size": 64}
    with pytest.raises(ValueError, match="needs a model with a map head"):
        gym.make("GQNMaze-v0", checkpoint=str(plain), obs_keys=("map",), **scene)
    env = gym.make("GQNMaze-v0", checkpoint=str(tmp_path / "map.pt"), obs_keys=("map", "viewpoint"), **scene)
    try:
        assert env.observation_space["map"].shape == shape
        obs, _ = env.reset(seed=0)
        for action in (2, 1, 2):
            obs = env.step(action)[0]
        assert env.observation_space.contains(obs)
        state = env.get_wrapper_attr("state")
        episode = state.episodes[0]
        model = load_model(tmp_path / "map.pt")
        with torch.no_grad():
            r = model.encode(np.stack(episode.images), np.stack(episode.viewpoints))  # (4, r + size, 1, 1)
        expected = r[:, tiny_config.r_channels :].mean(dim=0).reshape(shape).numpy()
        np.testing.assert_allclose(obs["map"], expected, rtol=1e-4, atol=1e-5)
    finally:
        env.close()


def test_the_map_channels_are_completed_when_imagining_not_at_every_step(tiny_config, tmp_path):
    """Unless the map key is observed, a step leaves the map head out; imagine() adds the frames it skipped."""
    plain = tmp_path / "plain.pt"
    save_checkpoint(plain, model=GQN(tiny_config))
    add_map_head(plain, tmp_path / "map.pt", MAP)
    scene = {"num_rows": 2, "num_cols": 2, "map_size": 64}
    lazy = gym.make("GQNMaze-v0", checkpoint=str(tmp_path / "map.pt"), obs_keys=("patches", "viewpoint"), **scene)
    eager = gym.make("GQNMaze-v0", checkpoint=str(tmp_path / "map.pt"), obs_keys=("map", "viewpoint"), **scene)
    try:
        for episode in range(2):  # the second episode starts the map afresh
            for env in (lazy, eager):
                env.reset(seed=episode)
            for action in (2, 0, 2, 1):
                for env in (lazy, eager):
                    env.step(action)
            state = lazy.get_wrapper_attr("state")
            assert not state.sums[0, tiny_config.r_channels :].any()  # nothing of the map yet
            pose = lazy.unwrapped.agent.pos
            images = [env.get_wrapper_attr("imagine")([pose[0], pose[2], 0.3]) for env in (lazy, eager)]
            np.testing.assert_array_equal(images[0], images[1])
            full = eager.get_wrapper_attr("state").sums[0]
            np.testing.assert_allclose(state.sums[0], full, rtol=1e-5, atol=1e-6)
            assert state.counts[0] == 5
    finally:
        lazy.close()
        eager.close()


def test_coverage_map_is_a_per_cell_mean_and_a_view_count_that_scaling_does_not_fade(tiny_config):
    from world_model.generator import coverage_inputs
    from world_model.model import context_excess, scale_to_context

    model = GQN(tiny_config.replace(map_channels=MAP, map_layout="coverage")).eval()
    config, side = model.config, model.config.hidden_size
    images, viewpoints = _frames(config, np.random.default_rng(2), batch=1, views=1)
    with torch.no_grad():
        one = model.encode(images[0], viewpoints[0])[:, config.r_channels :].reshape(1, MAP + 1, side, side)
    footprint = one[:, -1:]
    assert footprint.max() == pytest.approx(1.0) and footprint.min() == 0.0  # the view sees part of the floor
    seen = footprint == 1.0  # cells well inside the footprint
    for views in (1, 4, config.context_max, 10 * config.context_max):
        summed = scale_to_context(one * views, views, config.context_max)  # the same view, `views` times
        excess = torch.as_tensor(context_excess(views, config.context_max)).reshape(1, 1)
        inputs = coverage_inputs(summed, excess)
        # the mean over the views that looked at a cell is the one view's features, however many were summed
        cells = seen.expand(-1, MAP, -1, -1)
        torch.testing.assert_close(inputs["map"][cells], one[:, :MAP][cells])
        counted = inputs["coverage"][seen]
        torch.testing.assert_close(counted, torch.full_like(counted, float(np.log1p(views))))
        assert inputs["coverage"][footprint == 0].abs().max() == 0  # unseen cells: no views
    # the model renders differently from the same mean map seen by more views: it can grow surer
    query = viewpoints[0]
    r = model.scene_representation(np.repeat(images, 4, axis=1), np.repeat(viewpoints, 4, axis=1))
    with torch.no_grad():
        few = model.render(r, query, context=(images, viewpoints))
        long_sum = scale_to_context(r * 50, 200, config.context_max)
        many = model.render(long_sum, query, context=(images, viewpoints), frames=200)
    assert not torch.allclose(few, many)


def test_add_coverage_keeps_the_grid_head_and_refuses_other_models(plain_checkpoint, tmp_path):
    from world_model.checkpoint import add_coverage

    add_map_head(plain_checkpoint, tmp_path / "grid.pt", MAP, layout="grid")
    add_coverage(tmp_path / "grid.pt", tmp_path / "coverage.pt")
    grid, coverage = load_model(tmp_path / "grid.pt"), load_model(tmp_path / "coverage.pt")
    assert coverage.config.map_layout == "coverage"
    for name, tensor in grid.representation.state_dict().items():
        torch.testing.assert_close(coverage.representation.state_dict()[name], tensor, rtol=0, atol=0)
    add_map_head(plain_checkpoint, tmp_path / "vector.pt", MAP)
    for source in (plain_checkpoint, tmp_path / "vector.pt", tmp_path / "coverage.pt"):
        with pytest.raises(CheckpointError, match="no grid map head"):
            add_coverage(source, tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()
    result = subprocess.run(
        [sys.executable, "-m", "gqn_env.cli", "add-coverage", str(plain_checkpoint), str(tmp_path / "cli.pt")],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "no grid map head" in result.stderr and "Traceback" not in result.stderr

"""The state-oracle reference observation, the GQNMaze features extractor and the shared PPO settings."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.features import GQNMazeExtractor, ProjectedExtractor, fit_projection
from agents.oracle import GOAL_MODES, RAY_ANGLES, PrivilegedGoal, PrivilegedRays, StateOracle
from agents.rl import PPO_SETTINGS, make_agent, make_vec_env
from gqn_env.envs import privileged

TINY_SCENE = {"num_rows": 2, "num_cols": 2, "max_episode_steps": 20, "map_size": 32, "image_size": 16}


def test_state_oracle_observes_the_goal_and_the_walls():
    env = StateOracle(gym.make("GQNMazeScene-v0", **TINY_SCENE))
    try:
        obs, _ = env.reset(seed=0)
        scene = env.unwrapped
        assert env.observation_space.contains(obs) and obs.shape == (env.size,) == (20,)
        side = max(scene.max_x - scene.min_x, scene.max_z - scene.min_z)
        forward, left = privileged.goal_egocentric(scene)
        np.testing.assert_allclose(obs[7:9], np.array([forward, left]) / side, rtol=1e-5)
        walls = privileged.obstacle_distances(scene, RAY_ANGLES, max_distance=2 * scene.room_size) / scene.room_size
        np.testing.assert_allclose(obs[-len(RAY_ANGLES) :], walls, rtol=1e-5)
        # Turning left (MiniWorld turns 15 degrees) moves the goal's bearing 15 degrees to the right.
        before = math.atan2(obs[11], obs[10])
        after_obs, *_ = env.step(0)
        turned = math.atan2(after_obs[11], after_obs[10])
        assert math.remainder(before - turned, 2 * math.pi) == pytest.approx(math.radians(15), abs=1e-4)
    finally:
        env.close()


def test_state_oracle_refuses_an_env_without_viewpoints_and_unknown_goal_modes():
    with pytest.raises(ValueError, match="viewpoint"):
        StateOracle(gym.make("CartPole-v1"))
    with pytest.raises(ValueError, match="goal must be one of"):
        StateOracle(gym.make("GQNMazeScene-v0", **TINY_SCENE), goal="sometimes")


def test_memory_and_view_oracles_know_the_goal_from_its_first_sighting_or_only_in_view():
    """Turning on the spot in one room: the goal comes into view and leaves it again."""
    one_room = {**TINY_SCENE, "num_rows": 1, "num_cols": 1, "max_episode_steps": 60}
    envs = {mode: StateOracle(gym.make("GQNMazeScene-v0", **one_room), goal=mode) for mode in GOAL_MODES}
    try:
        obs = {mode: [env.reset(seed=3)[0]] for mode, env in envs.items()}
        visible = [privileged.goal_visible(envs["always"].unwrapped)]
        for _ in range(48):  # two full turns of 24 x 15 degrees
            for mode, env in envs.items():
                obs[mode].append(env.step(0)[0])
            visible.append(privileged.goal_visible(envs["always"].unwrapped))
        visible = np.array(visible)
        assert visible.any() and not visible.all(), "the turn should bring the goal in and out of view"
        always = np.stack(obs["always"])
        seen = np.logical_or.accumulate(visible)
        for mode, known in (("in_view", visible), ("remembered", seen)):
            got = np.stack(obs[mode])
            assert got.shape == (49, 21)
            np.testing.assert_array_equal(got[:, -1], known.astype(np.float32))
            np.testing.assert_allclose(got[known, 7:12], always[known, 7:12], rtol=1e-5)
            assert not got[~known, 7:12].any()  # unknown goal: zeros
            np.testing.assert_allclose(
                got[:, :-1][:, [*range(7), *range(12, 20)]], always[:, [*range(7), *range(12, 20)]]
            )
        # A new episode forgets the goal.
        first, _ = envs["remembered"].reset(seed=4)
        assert first[-1] == float(privileged.goal_visible(envs["remembered"].unwrapped))
    finally:
        for env in envs.values():
            env.close()


def _space(map_shape=(8, 2, 2), vector=5):
    return gym.spaces.Dict(
        {
            "patches": gym.spaces.Box(-np.inf, np.inf, map_shape, np.float32),
            "representation": gym.spaces.Box(-np.inf, np.inf, (vector,), np.float32),
        }
    )


def test_privileged_goal_adds_the_oracles_goal_fields_to_a_dict_observation():
    oracle = StateOracle(gym.make("GQNMazeScene-v0", **TINY_SCENE), goal="remembered")
    added = PrivilegedGoal(gym.make("GQNMazeScene-v0", **TINY_SCENE), goal="remembered")
    try:
        reference, _ = oracle.reset(seed=3)
        obs, _ = added.reset(seed=3)
        assert set(obs) == {*added.env.observation_space.spaces, "oracle_goal"}
        for action in [2, 2, 0, 0, 0, 2, 1, 2, 2, 0]:
            assert added.observation_space.contains(obs)
            np.testing.assert_array_equal(obs["oracle_goal"], reference[[7, 8, 9, 10, 11, -1]])
            reference, *_ = oracle.step(action)
            obs, *_ = added.step(action)
    finally:
        oracle.close()
        added.close()
    with pytest.raises(ValueError, match="goal"):
        PrivilegedGoal(gym.make("GQNMazeScene-v0", **TINY_SCENE), goal="sometimes")
    with pytest.raises(ValueError, match="oracle_goal"):
        make_vec_env("pixels", "GQNMazeScene-v0", 1, seed=0, env_kwargs=TINY_SCENE, oracle_goal="always")


def test_privileged_rays_adds_the_oracles_free_distances_to_a_dict_observation():
    oracle = StateOracle(gym.make("GQNMazeScene-v0", **TINY_SCENE))
    added = PrivilegedRays(gym.make("GQNMazeScene-v0", **TINY_SCENE))
    rays = slice(12, 12 + len(RAY_ANGLES))
    try:
        reference, _ = oracle.reset(seed=5)
        obs, _ = added.reset(seed=5)
        assert set(obs) == {*added.env.observation_space.spaces, "oracle_rays"}
        seen = []
        for action in [2, 2, 2, 0, 2, 2, 1, 1, 2, 2]:
            assert added.observation_space.contains(obs)
            np.testing.assert_array_equal(obs["oracle_rays"], reference[rays])
            seen.append(obs["oracle_rays"])
            reference, *_ = oracle.step(action)
            obs, *_ = added.step(action)
        assert np.ptp(np.stack(seen), axis=0).max() > 0  # the distances follow the agent
    finally:
        oracle.close()
        added.close()
    with pytest.raises(ValueError, match="Dict"):
        PrivilegedRays(StateOracle(gym.make("GQNMazeScene-v0", **TINY_SCENE)))
    with pytest.raises(ValueError, match="oracle_rays"):
        make_vec_env("state_oracle", "GQNMazeScene-v0", 1, seed=0, env_kwargs=TINY_SCENE, oracle_rays=True)


def test_extractor_gives_each_key_its_network_and_keeps_where_in_the_map():
    torch.manual_seed(0)
    extractor = GQNMazeExtractor(_space(), vector_features=16, map_channels=4)
    assert extractor.features_dim == 4 * 2 * 2 + 16
    obs = {"patches": torch.zeros(2, 8, 2, 2), "representation": torch.randn(2, 5)}
    obs["patches"][0, :, 0, 0] = 1.0  # the same feature, top-left in one view and bottom-right in the other
    obs["patches"][1, :, 1, 1] = 1.0
    out = extractor(obs)
    assert out.shape == (2, extractor.features_dim)
    assert not torch.allclose(out[0, :16], out[1, :16])  # pooling would have made these equal
    out.sum().backward()
    assert all(p.grad is not None for p in extractor.parameters())


def test_extractor_reads_plain_keys_without_layer_norm():
    space = gym.spaces.Dict({"a": gym.spaces.Box(-1, 1, (3,)), "b": gym.spaces.Box(-1, 1, (3,))})
    extractor = GQNMazeExtractor(space, vector_features=4, plain_keys=("b",))
    assert isinstance(extractor.nets["a"][0], torch.nn.LayerNorm)
    assert isinstance(extractor.nets["b"][0], torch.nn.Identity)
    # LayerNorm makes "a" blind to a common offset and scale of its fields; "b" sees it.
    x, y = torch.tensor([[0.1, 0.2, 0.4]]), torch.tensor([[0.3, 0.5, 0.9]])  # y = 2x + 0.1
    with torch.no_grad():
        assert torch.allclose(extractor.nets["a"](x), extractor.nets["a"](y), atol=1e-3)  # up to LayerNorm's eps
        assert not torch.allclose(extractor.nets["b"](x), extractor.nets["b"](y))


def test_extractor_raw_vector_reading_passes_vectors_on_unchanged_beside_the_map_encoding():
    torch.manual_seed(0)
    extractor = GQNMazeExtractor(_space(), map_channels=4, vector_reading="raw")
    assert extractor.features_dim == 4 * 2 * 2 + 5  # the map's encoding, then the 5 raw fields
    obs = {"patches": torch.rand(3, 8, 2, 2), "representation": torch.randn(3, 5)}
    out = extractor(obs)
    assert torch.equal(out[:, 16:], obs["representation"])
    assert not any(p.requires_grad for p in extractor.nets["representation"].parameters())
    with pytest.raises(ValueError, match="vector_reading"):
        GQNMazeExtractor(_space(), vector_reading="mlp")


def test_extractor_map_layer_norm_reads_a_map_at_any_scale():
    """With ``map_norm="layer"`` a map and the same map scaled 100x give the same features;
    without it the tiny map gives features close to the empty map's."""
    torch.manual_seed(0)
    space = gym.spaces.Dict({"patches": gym.spaces.Box(0, np.inf, (8, 2, 2), np.float32)})
    plain, normed = GQNMazeExtractor(space, map_channels=4), GQNMazeExtractor(space, map_channels=4, map_norm="layer")
    assert isinstance(normed.nets["patches"][0], torch.nn.LayerNorm)
    assert isinstance(plain.nets["patches"][0], torch.nn.Conv2d)  # saved agents keep their layer names
    tiny = torch.zeros(1, 8, 2, 2)
    tiny[0, 3, 1, 0] = 0.01
    with torch.no_grad():
        assert torch.allclose(normed({"patches": tiny}), normed({"patches": 100 * tiny}), atol=1e-4)
        gap = (plain({"patches": tiny}) - plain({"patches": torch.zeros_like(tiny)})).abs().max()
        assert gap < 0.01 < (normed({"patches": tiny}) - normed({"patches": torch.zeros_like(tiny)})).abs().max()
    with pytest.raises(ValueError, match="map_norm"):
        GQNMazeExtractor(space, map_norm="batch")


def test_extractor_refuses_spaces_it_cannot_read():
    with pytest.raises(ValueError, match="Dict"):
        GQNMazeExtractor(gym.spaces.Box(0, 1, (3,)))
    with pytest.raises(ValueError, match="shape"):
        GQNMazeExtractor(gym.spaces.Dict({"x": gym.spaces.Box(0, 1, (2, 2, 2, 2))}))


def test_fit_projection_whitens_the_top_components_and_refuses_bad_samples():
    rng = np.random.default_rng(0)
    # Samples that vary along two directions only (standard deviations 3 and 1), plus an offset.
    directions = np.linalg.qr(rng.standard_normal((10, 2)))[0].T  # (2, 10), orthonormal rows
    x = 5.0 + (rng.standard_normal((500, 2)) * [3.0, 1.0]) @ directions
    mean, basis = fit_projection(x, 2)
    assert mean.shape == (10,) and basis.shape == (10, 2) and mean.dtype == basis.dtype == np.float32
    z = (x - mean) @ basis
    np.testing.assert_allclose(z.std(axis=0, ddof=1), [1.0, 1.0], rtol=1e-4)  # unit variance each
    np.testing.assert_allclose(np.corrcoef(z.T)[0, 1], 0.0, atol=1e-6)  # uncorrelated
    top = basis[:, 0] / np.linalg.norm(basis[:, 0])
    assert abs(top @ directions[0]) > 0.999  # the first component is the widest direction
    # A third component has no variance: it reads zeros, not noise blown up.
    _, basis3 = fit_projection(x, 3)
    assert np.abs((x - mean) @ basis3[:, 2]).max() < 1e-3
    for bad, dims in ((x, 0), (x, 11), (x[:1], 1), (np.full((5, 3), np.nan), 1)):
        with pytest.raises(ValueError):
            fit_projection(bad, dims)


def test_projected_extractor_projects_its_keys_and_passes_the_others_flat():
    space = gym.spaces.Dict(
        {
            "patches": gym.spaces.Box(-np.inf, np.inf, (2, 2, 2), np.float32),
            "viewpoint": gym.spaces.Box(-1, 1, (7,), np.float32),
        }
    )
    mean = np.arange(8, dtype=np.float32)
    basis = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    extractor = ProjectedExtractor(space, {"patches": (mean, basis)})
    assert extractor.features_dim == 3 + 7 and not list(extractor.parameters())  # nothing learns
    obs = {"patches": torch.rand(4, 2, 2, 2), "viewpoint": torch.rand(4, 7)}
    out = extractor(obs)
    expected = (obs["patches"].flatten(1) - torch.from_numpy(mean)) @ torch.from_numpy(basis)
    torch.testing.assert_close(out[:, :3], expected)
    torch.testing.assert_close(out[:, 3:], obs["viewpoint"])
    with pytest.raises(ValueError, match="not in the observation"):
        ProjectedExtractor(space, {"image": (mean, basis)})
    with pytest.raises(ValueError, match="projection of 'patches'"):
        ProjectedExtractor(space, {"patches": (mean[:4], basis)})


def test_record_select_learns_which_rows_to_read():
    """Uniform at first; trained, a head's weight moves onto the one row that predicts the target."""
    torch.manual_seed(0)
    extractor = GQNMazeExtractor(gym.spaces.Dict({"landmarks": gym.spaces.Box(-np.inf, np.inf, (6, 3), np.float32)}))
    select = extractor.nets["landmarks"]
    assert extractor.features_dim == select.out_features
    assert torch.allclose(torch.softmax(select.logits, -1), torch.full_like(select.logits, 1 / 6))
    head = torch.nn.Linear(extractor.features_dim, 1)
    optimizer = torch.optim.Adam([*extractor.parameters(), *head.parameters()], lr=0.05)
    for _ in range(300):
        table = torch.randn(64, 6, 3)
        loss = ((head(extractor({"landmarks": table}))[:, 0] - table[:, 4, 1]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1
    assert torch.softmax(select.logits, -1)[:, 4].max() > 0.5  # some head reads row 4


@pytest.mark.parametrize("sharpness", [1.0, 10.0])
def test_record_select_sharpness_decides_how_fast_the_selection_moves_at_ppos_learning_rate(sharpness):
    """At 3e-4 (PPO's rate) unscaled logits barely move in 300 updates; scaled by 10 they pick the row."""
    rows = 32
    torch.manual_seed(0)
    space = gym.spaces.Dict({"landmarks": gym.spaces.Box(-np.inf, np.inf, (rows, 7), np.float32)})
    extractor = GQNMazeExtractor(space, select_sharpness=sharpness)
    select = extractor.nets["landmarks"]
    head = torch.nn.Linear(extractor.features_dim, 1)
    optimizer = torch.optim.Adam([*extractor.parameters(), *head.parameters()], lr=3e-4)
    for _ in range(300):
        table = torch.randn(64, rows, 7)
        loss = ((head(extractor({"landmarks": table}))[:, 0] - table[:, 10, 1]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    weight = torch.softmax(sharpness * select.logits, -1)[:, 10].max().item()
    if sharpness == 1.0:
        assert weight < 1.5 / rows
    else:
        assert weight > 3 / rows
    with pytest.raises(ValueError, match="sharpness"):
        GQNMazeExtractor(space, select_sharpness=0.0)


def test_make_agent_shares_the_settings_across_observation_types():
    oracle = make_vec_env("state_oracle", "GQNMazeScene-v0", 1, seed=0, env_kwargs=TINY_SCENE)
    pixels = make_vec_env("pixels", "GQNMazeScene-v0", 1, seed=0, env_kwargs={**TINY_SCENE, "image_size": 36})
    try:
        agents = [make_agent("state_oracle", oracle, "fast"), make_agent("pixels", pixels, "fast")]
        for agent in agents:
            for key, value in PPO_SETTINGS["fast"].items():
                got = agent.learning_rate if key == "learning_rate" else getattr(agent, key)
                assert got == value, key
        with pytest.raises(ValueError, match="settings"):
            make_agent("state_oracle", oracle, "slowest")
        with pytest.raises(ValueError, match="obs_type"):
            make_agent("radar", oracle)
    finally:
        oracle.close()
        pixels.close()


@pytest.mark.slow
def test_oracle_ppo_updates_the_policy():
    venv = make_vec_env("state_oracle", "GQNMazeScene-v0", 2, seed=0, env_kwargs=TINY_SCENE)
    agent = make_agent("state_oracle", venv, {"n_steps": 32, "batch_size": 32, "n_epochs": 2})
    before = [p.detach().clone() for p in agent.policy.parameters()]
    agent.learn(64)
    assert agent.num_timesteps >= 64
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.policy.parameters(), strict=True))
    venv.close()


def test_gqn_features_are_standardised_and_their_statistics_saved_with_the_agent(tmp_path):
    from stable_baselines3.common.vec_env import VecNormalize

    from agents.rl import agent_info, restore_normalization, save_agent
    from world_model import GQN, GQNConfig

    torch.manual_seed(0)
    model = GQN(GQNConfig.tiny())
    kwargs = {**TINY_SCENE, "obs_keys": ("patches", "representation", "viewpoint")}
    venv = make_vec_env("gqn", "GQNMazeScene-v0", 2, seed=0, model=model, env_kwargs=kwargs)
    assert isinstance(venv, VecNormalize)
    raw = make_vec_env("gqn", "GQNMazeScene-v0", 2, seed=0, model=model, env_kwargs=kwargs, normalize=False)
    agent = make_agent("gqn", venv, {"n_steps": 32, "batch_size": 32, "n_epochs": 1})
    agent.learn(64)
    # What the policy saw is the raw feature standardised by the running statistics.
    obs = raw.reset()
    rms = venv.obs_rms["representation"]
    expected = np.clip((obs["representation"] - rms.mean) / np.sqrt(rms.var + venv.epsilon), -10, 10)
    np.testing.assert_allclose(venv.normalize_obs(obs)["representation"], expected, rtol=1e-5, atol=1e-6)
    plain = make_vec_env("gqn", "GQNMazeScene-v0", 1, 0, model, kwargs, plain_keys=("viewpoint",))
    assert plain.norm_obs_keys == ["patches", "representation"]
    plain.close()
    save_agent(agent, tmp_path / "a", model, obs_type="gqn", env_kwargs=kwargs)
    assert agent_info(tmp_path / "a")["obs_type"] == "gqn"
    fresh = restore_normalization(make_vec_env("gqn", "GQNMazeScene-v0", 1, 5, model, kwargs), tmp_path / "a")
    assert not fresh.training
    for key in ("patches", "representation", "viewpoint"):
        np.testing.assert_array_equal(fresh.obs_rms[key].mean, venv.obs_rms[key].mean)
        np.testing.assert_array_equal(fresh.obs_rms[key].var, venv.obs_rms[key].var)
    for v in (venv, raw, fresh):
        v.close()


@pytest.mark.slow
def test_recurrent_agents_read_pixels_and_gqn_features():
    from sb3_contrib import RecurrentPPO

    from world_model import GQN, GQNConfig

    model = GQN(GQNConfig.tiny())
    gqn = make_vec_env("gqn_lstm", "GQNMazeScene-v0", 2, 0, model, {**TINY_SCENE, "obs_keys": ("patches", "viewpoint")})
    pixels = make_vec_env("pixels_lstm", "GQNMazeScene-v0", 2, 0, env_kwargs={**TINY_SCENE, "image_size": 36})
    try:
        settings = {"n_steps": 16, "batch_size": 16, "n_epochs": 1}
        for obs_type, venv in (("gqn_lstm", gqn), ("pixels_lstm", pixels)):
            agent = make_agent(obs_type, venv, settings)
            assert isinstance(agent, RecurrentPPO)
            before = [p.detach().clone() for p in agent.policy.parameters()]
            agent.learn(32)
            assert any(not torch.equal(a, b) for a, b in zip(before, agent.policy.parameters(), strict=True))
        assert type(make_agent("gqn_lstm", gqn, settings).policy.features_extractor) is GQNMazeExtractor
        # sb3-contrib's LSTM by default (256 units, a second one for the critic); "small" shares 64 units.
        assert make_agent("pixels_lstm", pixels, settings).policy.lstm_critic.hidden_size == 256
        small = make_agent("gqn_lstm", gqn, settings, lstm="small").policy
        assert small.lstm_actor.hidden_size == 64 and small.shared_lstm and small.lstm_critic is None
        with pytest.raises(ValueError, match="lstm must be one of"):
            make_agent("gqn_lstm", gqn, settings, lstm="tiny")
    finally:
        gqn.close()
        pixels.close()

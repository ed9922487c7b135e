"""The RL benchmark picks up an interrupted invocation instead of repeating finished runs."""

import argparse
import json

import numpy as np
import pytest
import torch

from benchmarks import rl_sample_efficiency as bench


def _args(**overrides):
    args = {
        "variants": ["gqn", "pixels"],
        "seeds": 2,
        "first_seed": 0,
        "steps": 100,
        "restart": False,
        "out": None,
        "only_summarize": False,
    }
    return argparse.Namespace(**{**args, **overrides})


def _fake_run(calls, fail_at=None):
    def run(variant, seed, args):
        if (variant, seed) == fail_at:
            raise KeyboardInterrupt  # the invocation is interrupted here
        calls.append((variant, seed))
        return {"variant": variant, "seed": seed, "auc": 0.5, "seconds": 1.0, "steps_to_threshold": float("inf")}

    return run


def test_interrupted_invocation_resumes_after_the_last_finished_run(tmp_path, monkeypatch):
    partial = tmp_path / "rl_runs"
    calls = []
    monkeypatch.setattr(bench, "run", _fake_run(calls, fail_at=("gqn", 1)))
    with pytest.raises(KeyboardInterrupt):
        bench.run_all(_args(), partial)
    assert calls == [("gqn", 0), ("pixels", 0)]
    assert sorted(p.name for p in partial.iterdir()) == ["gqn_0.json", "pixels_0.json"]
    assert json.loads((partial / "gqn_0.json").read_text())["run"]["seed"] == 0

    calls.clear()
    monkeypatch.setattr(bench, "run", _fake_run(calls))
    results = bench.run_all(_args(), partial)
    assert calls == [("gqn", 1), ("pixels", 1)]  # seed 0 was not run again
    assert sorted((r["variant"], r["seed"]) for r in results) == [("gqn", 0), ("gqn", 1), ("pixels", 0), ("pixels", 1)]


def test_other_settings_or_restart_start_afresh(tmp_path, monkeypatch):
    partial = tmp_path / "rl_runs"
    calls = []
    monkeypatch.setattr(bench, "run", _fake_run(calls))
    bench.run_all(_args(seeds=1), partial)
    calls.clear()
    bench.run_all(_args(seeds=1, steps=200), partial)  # different settings: nothing reused
    assert calls == [("gqn", 0), ("pixels", 0)]
    calls.clear()
    bench.run_all(_args(seeds=1, steps=200, restart=True), partial)
    assert calls == [("gqn", 0), ("pixels", 0)]


def test_separate_invocations_fill_one_folder_and_the_full_command_finds_them(tmp_path, monkeypatch):
    runs = tmp_path / "rl_runs"
    calls = []
    monkeypatch.setattr(bench, "run", _fake_run(calls))
    bench.run_all(_args(variants=["pixels"]), runs)  # e.g. a second process for the slow baseline
    bench.run_all(_args(variants=["gqn"], seeds=1), runs)
    calls.clear()
    results = bench.run_all(_args(variants=["gqn", "pixels"], only_summarize=True), runs)
    assert calls == []
    assert sorted((r["variant"], r["seed"]) for r in results) == [("gqn", 0), ("pixels", 0), ("pixels", 1)]


def test_a_pixel_run_is_reused_whatever_the_gqn_observation_keys(tmp_path, monkeypatch):
    runs = tmp_path / "rl_runs"
    calls = []
    monkeypatch.setattr(bench, "run", _fake_run(calls))
    bench.run_all(_args(variants=["gqn", "pixels"], seeds=1, gqn_obs=["representation"]), runs)
    calls.clear()
    bench.run_all(_args(variants=["gqn", "pixels"], seeds=1, gqn_obs=["patches"]), runs)
    assert calls == [("gqn", 0)]  # the pixel agent never read gqn_obs


def _result(variant, steps, auc):
    return {"variant": variant, "seed": 0, "steps_to_threshold": steps, "auc": auc, "curve": [auc], "seconds": 60.0}


def test_steps_ratio_is_a_bound_when_the_representation_never_reaches_the_threshold():
    args = _args(variants=["gqn", "gqn_online", "pixels"], steps=100_000)
    results = [
        _result("gqn", 20_000.0, 0.4),
        _result("gqn_online", float("inf"), 0.2),
        _result("pixels", 60_000.0, 0.4),
    ]
    _, ratios = bench.summarize(results, args)
    assert ratios["steps_ratio_pixels_over_gqn"] == pytest.approx(3.0)
    assert "steps_ratio_pixels_over_gqn_online" not in ratios
    assert ratios["steps_ratio_pixels_over_gqn_online_at_most"] == pytest.approx(0.6)
    assert ratios["auc_ratio_gqn_online_over_pixels"] == pytest.approx(0.5)


def test_a_baseline_that_never_reaches_the_threshold_bounds_the_ratio_from_below():
    args = _args(variants=["gqn", "pixels", "pixels_lstm"], steps=100_000)
    results = [
        _result("gqn", 25_000.0, 0.6),
        _result("pixels", float("inf"), 0.2),
        _result("pixels_lstm", 50_000.0, 0.4),
    ]
    _, ratios = bench.summarize(results, args)
    assert ratios["steps_ratio_pixels_over_gqn_at_least"] == pytest.approx(4.0)
    assert ratios["steps_ratio_pixels_lstm_over_gqn"] == pytest.approx(2.0)
    assert ratios["steps_ratio_pixels_over_pixels_lstm_at_least"] == pytest.approx(2.0)
    assert "steps_ratio_pixels_lstm_over_pixels" not in ratios


def test_runs_saved_before_an_argument_existed_match_its_default():
    saved = {"steps": 100, "gqn_obs": ["patches"]}  # saved before --gqn-stack existed
    assert bench.same_run(saved, {"steps": 100, "gqn_obs": ["patches"], "gqn_stack": 1}, "gqn")
    assert not bench.same_run(saved, {"steps": 100, "gqn_obs": ["patches"], "gqn_stack": 4}, "gqn")
    assert bench.same_run({"steps": 100}, {"steps": 100, "gqn_obs": ["view"], "gqn_stack": 4}, "pixels")


def test_runs_saved_under_an_old_observation_key_match_its_new_name():
    saved = {"steps": 100, "gqn_obs": ["patches", "view", "viewpoint"], "gqn_stack": 1}
    settings = {"steps": 100, "gqn_obs": ["patches", "view_encoding", "viewpoint"], "gqn_stack": 1}
    assert bench.same_run(saved, settings, "gqn")
    assert not bench.same_run(saved, {**settings, "gqn_obs": ["patches", "viewpoint"]}, "gqn")


def test_the_policy_device_is_not_a_run_setting():
    args = _args(seeds=1)
    assert "device" not in bench.run_settings(argparse.Namespace(**{**vars(args), "device": "cuda"}))


def test_where_results_are_written_does_not_make_a_run_different(tmp_path, monkeypatch):
    runs = tmp_path / "rl_runs"
    calls = []
    monkeypatch.setattr(bench, "run", _fake_run(calls))
    bench.run_all(_args(seeds=1, save=False), runs)
    calls.clear()
    results = bench.run_all(_args(seeds=1, save=True, out="elsewhere.json", only_summarize=True), runs)
    assert calls == [] and len(results) == 2


def test_gqn_runs_are_told_apart_by_what_the_agent_observes_of_the_world_model(tmp_path):
    """The digest covers what agents observe: a copy, a generator-only change or a map head is the same run."""
    import torch

    from world_model import GQN, GQNConfig, save_checkpoint

    torch.manual_seed(0)
    model = GQN(GQNConfig.tiny())
    save_checkpoint(tmp_path / "a.pt", {"config": model.config.to_dict(), "model": model.state_dict()})
    with torch.no_grad():
        next(model.generator.parameters()).add_(1.0)
    save_checkpoint(tmp_path / "generator.pt", {"config": model.config.to_dict(), "model": model.state_dict()})
    with torch.no_grad():
        next(model.representation.parameters()).add_(1.0)
    save_checkpoint(tmp_path / "representation.pt", {"config": model.config.to_dict(), "model": model.state_dict()})
    from world_model.checkpoint import add_map_head

    add_map_head(tmp_path / "generator.pt", tmp_path / "map.pt", 4)  # the generator's own channels of r
    names = ("a", "generator", "map", "representation")
    digest = {name: bench.model_digest(str(tmp_path / f"{name}.pt")) for name in names}
    assert digest["a"] == digest["generator"] == digest["map"] != digest["representation"]
    assert bench.model_digest(str(tmp_path / "map.pt"), map_key=True) != digest["map"]  # an agent that reads it
    assert "gqn_checkpoint" not in bench.run_settings(_args(gqn_checkpoint="a.pt", gqn_model="x"))
    saved = {"steps": 100, "gqn_model": digest["a"]}
    assert bench.same_run(saved, {"steps": 100, "gqn_model": digest["generator"]}, "gqn")
    assert not bench.same_run(saved, {"steps": 100, "gqn_model": digest["representation"]}, "gqn")
    assert bench.same_run(saved, {"steps": 100, "gqn_model": digest["representation"]}, "pixels")
    # Runs saved before the digest was recorded used the first bundled model.
    assert bench.same_run({"steps": 100}, {"steps": 100, "gqn_model": bench.LATER_DEFAULTS["gqn_model"]}, "gqn")


def test_the_bundled_model_is_the_one_the_committed_rl_results_were_measured_with():
    """Re-bundling a model with another representation network means re-running the ``gqn`` RL seeds."""
    import pathlib

    results = json.loads((pathlib.Path(bench.__file__).parent / "results" / "rl_sample_efficiency.json").read_text())
    assert results["args"]["gqn_model"] == bench.model_digest(None)


def test_recurrent_runs_are_told_apart_by_their_lstm():
    saved = {"steps": 100}  # saved before --lstm existed: sb3-contrib's default
    assert bench.same_run(saved, {"steps": 100, "lstm": "sb3"}, "pixels_lstm")
    assert not bench.same_run(saved, {"steps": 100, "lstm": "small"}, "gqn_lstm")
    assert bench.same_run(saved, {"steps": 100, "lstm": "small"}, "gqn")  # a feed-forward agent has none


def test_runs_saved_before_gqn_normalize_existed_were_normalised():
    assert bench.same_run({"steps": 100}, {"steps": 100, "gqn_normalize": True}, "gqn_lstm")
    assert not bench.same_run({"steps": 100}, {"steps": 100, "gqn_normalize": False}, "gqn")
    assert bench.same_run({"steps": 100}, {"steps": 100, "gqn_normalize": False}, "pixels")


def _tiny_gqn_venv(obs_keys=("patches", "viewpoint")):
    from agents.rl import make_vec_env
    from world_model import GQN, GQNConfig

    scene = {"num_rows": 2, "num_cols": 2, "max_episode_steps": 20, "map_size": 32, "image_size": 16}
    return make_vec_env("gqn", "GQNMazeScene-v0", 1, 0, GQN(GQNConfig.tiny()), {**scene, "obs_keys": obs_keys})


def _head_args(**overrides):
    """The GQN head options at their defaults (``LATER_DEFAULTS``), with ``overrides``."""
    return argparse.Namespace(**{**bench.LATER_DEFAULTS, **overrides})


def _policy(venv, args):
    from agents.rl import make_agent

    return make_agent(
        "gqn", venv, {"n_steps": 32, "batch_size": 32}, policy_kwargs=bench.gqn_policy_kwargs(args)
    ).policy


def test_gqn_head_options_reach_the_policy_and_tell_runs_apart():
    import torch

    torch.manual_seed(0)
    venv = _tiny_gqn_venv()
    args = _head_args(
        gqn_plain_keys=["patches"],
        gqn_map_channels=4,
        gqn_map_norm="layer",
        gqn_share_extractor=False,
        gqn_net_arch=[32, 16],
    )
    policy = _policy(venv, args)
    venv.close()
    assert policy.pi_features_extractor is not policy.vf_features_extractor
    assert isinstance(policy.pi_features_extractor.nets["patches"][0], torch.nn.LayerNorm)
    assert policy.pi_features_extractor.nets["patches"][1].out_channels == 4
    widths = [m.out_features for m in policy.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear)]
    assert widths == [32, 16]
    # Runs saved before these options existed used SB3's shared extractor and 64x64 heads.
    assert bench.same_run({"steps": 100}, {"steps": 100, "gqn_share_extractor": True, "gqn_net_arch": None}, "gqn")
    assert not bench.same_run({"steps": 100}, {"steps": 100, "gqn_share_extractor": False}, "gqn")
    assert not bench.same_run({"steps": 100}, {"steps": 100, "gqn_net_arch": [256, 256]}, "gqn")
    assert bench.same_run({"steps": 100}, {"steps": 100, "gqn_map_norm": "none"}, "gqn")
    assert not bench.same_run({"steps": 100}, {"steps": 100, "gqn_map_norm": "layer"}, "gqn")
    assert bench.same_run({"steps": 100}, {"steps": 100, "gqn_net_arch": [256, 256]}, "pixels")


def test_flat_extractor_gives_the_heads_the_flattened_observation():
    import torch
    from stable_baselines3.common.torch_layers import CombinedExtractor

    venv = _tiny_gqn_venv()
    args = _head_args(gqn_extractor="flat")
    policy = _policy(venv, args)
    widths = {k: int(np.prod(space.shape)) for k, space in venv.observation_space.spaces.items()}
    venv.close()
    assert isinstance(policy.features_extractor, CombinedExtractor)
    assert policy.features_extractor.features_dim == widths["patches"] + widths["viewpoint"]
    first = next(m for m in policy.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear))
    assert first.in_features == widths["patches"] + widths["viewpoint"]  # no layer between them
    for option in (
        {"gqn_plain_keys": ["patches"]},
        {"gqn_map_norm": "layer"},
        {"gqn_vector_reading": "raw"},
        {"gqn_map_channels": 8},
        {"select_sharpness": 10.0},
    ):
        with pytest.raises(ValueError, match="GQNMazeExtractor"):
            bench.gqn_policy_kwargs(_head_args(gqn_extractor="flat", **option))
    # Runs saved before the option read the observation with GQNMazeExtractor.
    assert bench.same_run({"steps": 100}, {"steps": 100, "gqn_extractor": "gqn"}, "gqn")
    assert not bench.same_run({"steps": 100}, {"steps": 100, "gqn_extractor": "flat"}, "gqn")
    assert bench.same_run({"steps": 100}, {"steps": 100, "gqn_extractor": "flat"}, "pixels")
    assert bench.same_run({"steps": 100}, {"steps": 100, "gqn_vector_reading": "layer"}, "gqn")
    assert not bench.same_run({"steps": 100}, {"steps": 100, "gqn_vector_reading": "raw"}, "gqn")


def test_pca_extractor_reads_the_patches_through_a_fitted_projection():
    from agents.features import ProjectedExtractor
    from agents.rl import fit_key_projection
    from world_model import GQN, GQNConfig

    scene = {"num_rows": 2, "num_cols": 2, "max_episode_steps": 20, "map_size": 32, "image_size": 16}
    model = GQN(GQNConfig.tiny())
    mean, basis = fit_key_projection(model, "GQNMazeScene-v0", "patches", dims=4, scenes=2, steps=10, env_kwargs=scene)
    import torch

    from agents.rl import make_agent

    venv = _tiny_gqn_venv()
    args = _head_args(gqn_extractor="pca", gqn_pca_dims=4)
    kwargs = bench.gqn_policy_kwargs(args, {"patches": (mean, basis)})
    policy = make_agent("gqn", venv, {"n_steps": 32, "batch_size": 32}, policy_kwargs=kwargs).policy
    patch_width = int(np.prod(venv.observation_space["patches"].shape))
    venv.close()
    assert basis.shape == (patch_width, 4)
    assert isinstance(policy.features_extractor, ProjectedExtractor) and policy.features_extractor.features_dim == 4 + 7
    first = next(m for m in policy.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear))
    assert first.in_features == 4 + 7  # the heads read the components and the viewpoint directly
    with pytest.raises(ValueError, match="projections"):
        bench.gqn_policy_kwargs(args)
    with pytest.raises(ValueError, match="GQNMazeExtractor"):
        bench.gqn_policy_kwargs(_head_args(gqn_extractor="pca", gqn_map_channels=8), {"patches": (mean, basis)})
    # Runs saved before the option existed read 64 components (the default), and only gqn reads it.
    assert bench.same_run({"steps": 100}, {"steps": 100, "gqn_pca_dims": 64}, "gqn")
    assert not bench.same_run({"steps": 100}, {"steps": 100, "gqn_pca_dims": 32}, "gqn")
    assert bench.same_run({"steps": 100}, {"steps": 100, "gqn_pca_dims": 32}, "pixels")


def test_the_scene_s_distractor_count_tells_runs_apart_for_every_variant():
    saved = {"steps": 100}  # saved before --objects-per-room existed: the scene default, one a room
    for variant in ("gqn", "pixels", "state_oracle"):
        assert bench.same_run(saved, {"steps": 100, "objects_per_room": 1}, variant)
        assert not bench.same_run(saved, {"steps": 100, "objects_per_room": 0}, variant)


def test_the_distractor_count_reaches_the_scene(monkeypatch):
    seen = {}

    def fake_make_vec_env(variant, env_id, num_envs, seed, model, env_kwargs, **kwargs):
        seen.update(env_kwargs)
        raise RuntimeError("stop here")  # only the env's arguments are under test

    monkeypatch.setattr(bench, "make_vec_env", fake_make_vec_env)
    args = _args(episode_steps=50, objects_per_room=0, env_id="GQNMazeScene-S2-v0", num_envs=1, gqn_obs=["patches"])
    with pytest.raises(RuntimeError, match="stop here"):
        bench.run("state_oracle", 0, args)
    assert seen == {"max_episode_steps": 50, "objects_per_room": 0}


def test_the_forward_auxiliary_loss_tells_gqn_runs_apart_only():
    saved = {"steps": 100}  # saved before --gqn-forward-aux existed: no auxiliary loss
    assert bench.same_run(saved, {"steps": 100, "gqn_forward_aux": False}, "gqn")
    assert not bench.same_run(saved, {"steps": 100, "gqn_forward_aux": True}, "gqn")
    assert bench.same_run(saved, {"steps": 100, "gqn_forward_aux": True}, "pixels")


@pytest.mark.slow
def test_a_run_with_the_forward_auxiliary_loss_records_its_losses(monkeypatch):
    monkeypatch.setattr(
        bench, "make_vec_env", lambda *a, **k: _tiny_gqn_venv(("patches", "view_encoding", "viewpoint"))
    )
    args = _head_args(
        gqn_obs=["patches", "view_encoding", "viewpoint"],
        gqn_forward_aux=True,
        gqn_checkpoint=None,
        env_id="x",
        num_envs=1,
        episode_steps=20,
        steps=256,
        ppo="steady",
        lstm="sb3",
        device="cpu",
        bins=4,
        threshold=0.5,
        window=5,
        gqn_normalize=True,
        gqn_stack=1,
    )
    result = bench.run("gqn", 0, args)
    assert len(result["forward_aux_losses"]) == 2  # steady: 128-step rollouts
    assert all(np.isfinite(result["forward_aux_losses"]))


def test_the_auxiliary_epochs_tell_runs_apart_and_need_the_auxiliary_loss(monkeypatch, capsys):
    saved = {"steps": 100, "gqn_forward_aux": True}  # saved before the epochs were an option: 4
    assert bench.same_run(saved, {"steps": 100, "gqn_forward_aux": True, "gqn_forward_aux_epochs": 4}, "gqn")
    assert not bench.same_run(saved, {"steps": 100, "gqn_forward_aux": True, "gqn_forward_aux_epochs": 1}, "gqn")
    monkeypatch.setattr("sys.argv", ["rl_sample_efficiency", "--gqn-forward-aux-epochs", "1", "--only-summarize"])
    with pytest.raises(SystemExit):
        bench.main()
    assert "--gqn-forward-aux" in capsys.readouterr().err


def test_bootstrap_intervals_bracket_the_medians_and_are_reproducible():
    steps = {"gqn": [10_000.0, 20_000.0, 30_000.0, 40_000.0, 50_000.0], "pixels": [40_000.0, 60_000.0, 80_000.0]}
    intervals = bench.bootstrap_intervals(steps, [("pixels", "gqn")], resamples=2000)
    low, high = intervals["steps_to_threshold_gqn"]
    assert 10_000.0 <= low <= 30_000.0 <= high <= 50_000.0
    low, high = intervals["steps_ratio_pixels_over_gqn"]
    assert low < 60_000.0 / 30_000.0 < high
    assert low >= 40_000.0 / 50_000.0 and high <= 80_000.0 / 10_000.0  # no resample can go past the extremes
    assert bench.bootstrap_intervals(steps, [("pixels", "gqn")], resamples=2000) == intervals


def test_bootstrap_intervals_of_identical_seeds_have_no_width():
    intervals = bench.bootstrap_intervals({"gqn": [5.0, 5.0], "pixels": [10.0, 10.0]}, [("pixels", "gqn")])
    assert intervals["steps_ratio_pixels_over_gqn"] == [2.0, 2.0]


def test_runs_that_never_reach_the_threshold_open_the_interval_to_infinity():
    steps = {"gqn": [10_000.0, float("inf"), float("inf")], "pixels": [float("inf")] * 3}
    intervals = bench.bootstrap_intervals(steps, [("pixels", "gqn")], resamples=500)
    assert intervals["steps_to_threshold_gqn"] == [10_000.0, float("inf")]  # 2 of 3 draws finite: 26% of resamples
    assert intervals["steps_to_threshold_pixels"] == [float("inf"), float("inf")]
    assert intervals["steps_ratio_pixels_over_gqn"] == [float("inf"), float("inf")]  # resamples where gqn got there


def test_ratio_pairs_set_each_baseline_over_the_others_but_not_lstm_over_pixels():
    assert bench.ratio_pairs(["gqn", "pixels", "pixels_lstm"]) == [
        ("pixels", "gqn"),
        ("pixels", "pixels_lstm"),
        ("pixels_lstm", "gqn"),
    ]
    assert bench.ratio_pairs(["gqn", "state_oracle"]) == []


def test_paired_auc_compares_the_seeds_both_ran():
    results = [
        {"variant": "gqn", "seed": 0, "auc": 0.5},
        {"variant": "gqn", "seed": 1, "auc": 0.3},
        {"variant": "gqn", "seed": 2, "auc": 0.9},  # no pixel run of seed 2: left out
        {"variant": "pixels", "seed": 0, "auc": 0.4},
        {"variant": "pixels", "seed": 1, "auc": 0.4},
    ]
    paired = bench.paired_auc(results, [("pixels", "gqn")], resamples=1000)
    d = paired["auc_gqn_minus_pixels"]
    assert d["seeds"] == 2 and d["variant_higher"] == 1
    assert np.isclose(d["mean"], 0.0)  # (+0.1 - 0.1) / 2
    assert np.isclose(d["low"], -0.1) and np.isclose(d["high"], 0.1)  # resamples of two pairs: -0.1, 0, +0.1
    assert bench.paired_auc(results, [("pixels", "gqn")], resamples=1000) == paired
    assert bench.paired_auc(results, [("state_oracle", "gqn")]) == {}


def test_online_world_model_starts_from_scratch_or_trains_the_whole_bundled_model():
    from world_model import GQN, GQNConfig, SceneBuffer, Trainer

    scratch = bench.online_world_model("scratch", seed=3)
    assert scratch.config == GQNConfig.cpu().replace(seed=3)
    torch.manual_seed(0)  # the seed in the config, not torch's global state, initialises it
    again = GQN(GQNConfig.cpu().replace(seed=3))
    pairs = zip(scratch.state_dict().values(), again.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    model = bench.online_world_model("bundled", seed=3)
    assert model.config.seed == 3 and model.config.top_down_fraction == 0.0
    assert not model.config.freeze_representation and model.config.sigma_start == model.config.sigma_end == 0.7
    trainer = Trainer(model, SceneBuffer(image_size=model.config.image_size, max_scenes=4))
    trained = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in trained for p in model.representation.parameters())  # what agents observe adapts too
    with pytest.raises(ValueError, match="start"):
        bench.online_world_model("pretrained", seed=0)
    # The envs' cached bundled model is another copy, left frozen and as trained.
    shared = bench.load_world_model(None)
    assert shared is not model and shared.config.top_down_fraction > 0
    assert not any(p.requires_grad for p in shared.parameters())

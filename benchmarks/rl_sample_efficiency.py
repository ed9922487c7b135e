"""PPO sample efficiency: GQN features against raw pixels and a privileged-state reference.

Usage::

    python -m benchmarks.rl_sample_efficiency --save                 # the headline: hours on 2 CPU cores
    python -m benchmarks.rl_sample_efficiency --save --variants gqn  # one variant (others' runs are reused)
    python -m benchmarks.rl_sample_efficiency --save --only-summarize
    python -m benchmarks.rl_sample_efficiency --quick                # a smoke run of a few minutes

Results go to ``runs/benchmarks/rl_sample_efficiency.json`` (git-ignored);
``--save`` writes the committed ``benchmarks/results/rl_sample_efficiency.json``
and resumes from its committed runs, ``--out`` writes anywhere.
Each finished (variant, seed) run is saved to ``<out stem>_runs/<variant>_<seed>.json``;
if the invocation is interrupted, the same command resumes after the last
finished run, and several invocations (one per variant, say) can fill the folder
at once. ``--only-summarize`` writes the table from what is there.

Variants (agents/rl.py), each over ``--seeds`` seeds with identical scene seeds and
the same PPO settings (``--ppo``, :data:`agents.rl.PPO_SETTINGS`):

* ``gqn``: GQNMaze with the bundled, frozen world model, keys ``--gqn-obs``,
  standardised features, :class:`agents.features.GQNMazeExtractor`;
* ``gqn_lstm``: the same read by RecurrentPPO; ``gqn_online``: a ``cpu``-preset
  world model trained from scratch on the agent's frames (or, ``--gqn-online-start
  bundled``, the bundled one trained further on them);
* ``pixels``: the egocentric image (``--pixel-size``), 4 frames stacked, CnnPolicy;
* ``pixels_lstm``: one frame, RecurrentPPO with CnnLstmPolicy (the memory baseline);
* ``state_oracle``: privileged state (agents/oracle.py), the reference that bounds
  what any observation can buy; ``oracle_memory`` and ``oracle_view`` know the
  goal only from its first sighting on, or only while it is in view.

The defaults are the benchmark chosen in docs/rl.md: GQNMazeScene-S2 with 200-step
episodes, ``steady`` settings, 100k steps, 5 seeds. Reports steps to reach
``--threshold`` success (rolling over ``--window`` episodes) and the wall-clock
seconds to get there, the area under the binned success curve, and the ratios of
both pixel baselines over each variant (bounded when a side never got there),
with 95% bootstrap intervals of the median steps and of the steps ratios (seeds
resampled within each variant: how far the medians of a few seeds can be trusted);
writes a PNG (curves against steps and against minutes) and a JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.torch_layers import CombinedExtractor

import gqn_env  # noqa: F401
from agents.auxiliary import ForwardPrediction
from agents.features import MAP_NORMS, VECTOR_READINGS, ProjectedExtractor
from agents.goal_landmark import GoalLandmark
from agents.oracle import GOAL_MODES
from agents.rl import (
    GQN_TYPES,
    LSTM_POLICIES,
    ORACLE_TYPES,
    PPO_SETTINGS,
    SuccessCurve,
    WorldModelCallback,
    fit_key_projection,
    make_agent,
    make_vec_env,
    steps_to_rolling_threshold,
    success_curve,
)
from benchmarks._common import add_output_options, format_table, output_path, write_json
from gqn_env.envs.gqn_maze import bundled_checkpoint, load_world_model
from gqn_env.wrappers.representation import DEPRECATED_OBS_KEYS
from world_model import GQN, GQNConfig, SceneBuffer, Trainer, load_checkpoint, load_model
from world_model.atomic import atomic_path

#: Where ``gqn_online``'s world model starts (``--gqn-online-start``).
ONLINE_STARTS = ("scratch", "bundled")


def online_world_model(start: str, seed: int) -> GQN:
    """What ``gqn_online`` trains as it acts: a new ``cpu``-preset model, or the bundled one.

    ``"bundled"`` trains every weight of the bundled model further, the representation
    network included, on the agent's first-person frames: at its last learning rate
    (5e-5) and pixel noise (0.7), so that it adapts to the agent's views rather than
    starting its schedules over, and without top-down queries (the agent's frames
    have none).
    """
    if start == "scratch":
        return GQN(GQNConfig.cpu().replace(seed=seed))  # initialised from the seed
    if start != "bundled":
        raise ValueError(f"start must be one of {ONLINE_STARTS}, got {start!r}")
    model = load_model(bundled_checkpoint())  # its own copy: the envs' cached one stays frozen
    model.config = model.config.replace(
        seed=seed,
        freeze_representation=False,
        top_down_fraction=0.0,
        context_draw_max=0,
        context_sampling="uniform",
        lr_start=5e-5,
        lr_end=5e-5,
        sigma_start=0.7,
        sigma_end=0.7,
    )
    return model


def run(variant: str, seed: int, args: argparse.Namespace) -> dict:
    torch.manual_seed(seed)
    scene = {"max_episode_steps": args.episode_steps, "objects_per_room": args.objects_per_room}
    gqn_kwargs = {**scene, "obs_keys": args.gqn_obs}
    callbacks = [SuccessCurve()]
    projections = None
    if variant == "gqn_online":
        start = online_world_model(args.gqn_online_start, seed)
        buffer = SceneBuffer(image_size=start.config.image_size, max_scenes=2000)
        trainer = Trainer(start, buffer)
        venv = make_vec_env(variant, args.env_id, args.num_envs, seed, trainer.model, gqn_kwargs)
        callbacks.append(WorldModelCallback(trainer, buffer, updates_per_rollout=args.wm_updates))
    elif variant in ("gqn", "gqn_lstm"):
        model = load_world_model(args.gqn_checkpoint) if args.gqn_checkpoint else None
        plain_keys = tuple(args.gqn_plain_keys)
        if args.gqn_extractor == "pca":
            if variant != "gqn" or "patches" not in args.gqn_obs:
                raise ValueError("--gqn-extractor pca is for the gqn variant with the patches key")
            model = model or load_world_model()
            patches = fit_key_projection(model, args.env_id, "patches", args.gqn_pca_dims, env_kwargs=gqn_kwargs)
            projections = {"patches": patches}
            plain_keys += ("patches",)  # the projection was fitted on the raw map
        venv = make_vec_env(
            variant,
            args.env_id,
            args.num_envs,
            seed,
            model,
            gqn_kwargs,
            normalize=args.gqn_normalize,
            frame_stack=args.gqn_stack,
            goal_landmark=args.gqn_goal_landmark,
            oracle_goal=args.gqn_oracle_goal,
            oracle_rays=args.gqn_oracle_rays,
            plain_keys=plain_keys,
        )
    elif variant in ORACLE_TYPES:
        venv = make_vec_env(variant, args.env_id, args.num_envs, seed, None, scene)
    else:
        venv = make_vec_env(variant, args.env_id, args.num_envs, seed, None, {**scene, "image_size": args.pixel_size})
    if args.gqn_forward_aux and variant in ("gqn", "gqn_online"):
        callbacks.append(ForwardPrediction(epochs=args.gqn_forward_aux_epochs))
    extra = {"policy_kwargs": gqn_policy_kwargs(args, projections)} if variant in GQN_TYPES else {}
    if variant == "gqn_lstm":  # RecurrentPPO's policy has its own head layout
        for key in ("share_features_extractor", "net_arch"):
            extra["policy_kwargs"].pop(key, None)
    agent = make_agent(variant, venv, args.ppo, seed=seed, lstm=args.lstm, device=args.device, **extra)
    start = time.perf_counter()
    agent.learn(args.steps, callback=CallbackList(callbacks))
    seconds = time.perf_counter() - start
    extras = {}
    inner = venv
    while hasattr(inner, "venv") and not isinstance(inner, GoalLandmark):
        inner = inner.venv
    if isinstance(inner, GoalLandmark):  # which feature channel it ended up reading
        extras = {"goal_landmark_channel": inner.channel, "goal_landmark_successes": inner.successes}
    for callback in callbacks:
        if isinstance(callback, ForwardPrediction):  # the auxiliary loss, per rollout
            extras["forward_aux_losses"] = [round(x, 5) for x in callback.losses]
    venv.close()
    record = callbacks[0]
    curve = success_curve(record.timesteps, record.successes, args.steps, args.bins)
    steps = steps_to_rolling_threshold(record.timesteps, record.successes, args.threshold, args.window)
    return {
        "variant": variant,
        "seed": seed,
        "curve": curve.tolist(),
        "steps_to_threshold": steps,
        "seconds_to_threshold": seconds_at(record.timesteps, record.seconds, steps),
        "auc": float(np.nanmean(curve)) if np.isfinite(curve).any() else 0.0,
        "episodes": len(record.timesteps),
        "seconds": seconds,
        "device": args.device,
        "episode_end_steps": record.timesteps,
        "episode_end_seconds": [round(t, 2) for t in record.seconds],
        "episode_successes": [int(x) for x in record.successes],
        **extras,
    }


def gqn_policy_kwargs(args: argparse.Namespace, projections: dict | None = None) -> dict:
    """SB3 ``policy_kwargs`` of a GQN agent: its extractor's options and the policy's head layout.

    ``--gqn-extractor flat`` reads the observation with SB3's ``CombinedExtractor``
    instead: every key flattened and concatenated, no layer of its own, so the policy
    and value heads read the (standardised) features directly, as the oracle
    agents' ``MlpPolicy`` reads its state. ``--gqn-extractor pca`` reads it the same
    way, with the ``patches`` map first cut down by a fixed whitening PCA
    (``projections``, :class:`agents.features.ProjectedExtractor`).
    """
    if args.gqn_extractor in ("flat", "pca"):
        extractor_options = {  # each at its default, or it would be silently ignored
            "--gqn-plain-keys": not args.gqn_plain_keys,
            "--gqn-map-norm": args.gqn_map_norm == LATER_DEFAULTS["gqn_map_norm"],
            "--gqn-vector-reading": args.gqn_vector_reading == LATER_DEFAULTS["gqn_vector_reading"],
            "--gqn-map-channels": args.gqn_map_channels == LATER_DEFAULTS["gqn_map_channels"],
            "--select-sharpness": args.select_sharpness == LATER_DEFAULTS["select_sharpness"],
        }
        given = [flag for flag, default in extractor_options.items() if not default]
        if given:
            raise ValueError(
                f"{', '.join(given)}: options of GQNMazeExtractor, not of the {args.gqn_extractor} extractor"
            )
        if args.gqn_extractor == "flat":
            kwargs: dict = {"features_extractor_class": CombinedExtractor}
        elif projections is None:
            raise ValueError("the pca extractor needs its projections (fit_key_projection)")
        else:
            kwargs = {
                "features_extractor_class": ProjectedExtractor,
                "features_extractor_kwargs": {"projections": projections},
            }
    else:
        extractor = {
            "select_sharpness": args.select_sharpness,
            "plain_keys": tuple(args.gqn_plain_keys),
            "map_channels": args.gqn_map_channels,
            "map_norm": args.gqn_map_norm,
            "vector_reading": args.gqn_vector_reading,
        }
        kwargs = {"features_extractor_kwargs": extractor}
    kwargs["share_features_extractor"] = args.gqn_share_extractor
    if args.gqn_net_arch is not None:
        kwargs["net_arch"] = list(args.gqn_net_arch)
    return kwargs


def seconds_at(timesteps: list[int], seconds: list[float], step: float) -> float:
    """Wall-clock seconds when training reached ``step`` env steps (interpolated between episode ends; inf if never)."""
    if not np.isfinite(step) or not timesteps:
        return float("inf")
    return float(np.interp(step, [0, *timesteps], [0.0, *seconds]))


BASELINES = ("pixels", "pixels_lstm")
BOOTSTRAP_RESAMPLES = 10_000

#: Arguments that do not change what one (variant, seed) run does.
#: ``device`` changes only the arithmetic's rounding and the seconds, which each run records.
#: ``gqn_checkpoint`` is a path; the run setting is ``gqn_model``, a digest of the model (:func:`model_digest`).
NOT_RUN_SETTINGS = (
    "out",
    "restart",
    "variants",
    "seeds",
    "first_seed",
    "quick",
    "only_summarize",
    "save",
    "device",
    "gqn_checkpoint",
)


#: Arguments that only some variants read.
VARIANT_SETTINGS = {
    "gqn_obs": ("gqn", "gqn_online", "gqn_lstm"),
    "gqn_stack": ("gqn", "gqn_lstm"),
    "gqn_normalize": ("gqn", "gqn_lstm"),
    "gqn_model": ("gqn", "gqn_lstm"),
    "lstm": ("gqn_lstm", "pixels_lstm"),
    "select_sharpness": ("gqn", "gqn_online", "gqn_lstm"),
    "gqn_goal_landmark": ("gqn", "gqn_lstm"),
    "gqn_oracle_goal": ("gqn", "gqn_lstm"),
    "gqn_oracle_rays": ("gqn", "gqn_lstm"),
    "gqn_plain_keys": ("gqn", "gqn_lstm"),
    "gqn_map_channels": ("gqn", "gqn_online", "gqn_lstm"),
    "gqn_map_norm": ("gqn", "gqn_online", "gqn_lstm"),
    "gqn_share_extractor": ("gqn", "gqn_online"),
    "gqn_net_arch": ("gqn", "gqn_online"),
    "gqn_extractor": ("gqn", "gqn_online", "gqn_lstm"),
    "gqn_vector_reading": ("gqn", "gqn_online", "gqn_lstm"),
    "gqn_pca_dims": ("gqn",),
    "gqn_forward_aux": ("gqn", "gqn_online"),
    "gqn_forward_aux_epochs": ("gqn", "gqn_online"),
    "wm_updates": ("gqn_online",),
    "gqn_online_start": ("gqn_online",),
    "pixel_size": BASELINES,
}


def run_settings(args: argparse.Namespace) -> dict:
    """The arguments a finished run must share with this invocation to be reused."""
    return {k: v for k, v in vars(args).items() if k not in NOT_RUN_SETTINGS}


#: Values of arguments added after runs were saved without them.
#: Runs saved before ``gqn_model`` was recorded used the first bundled model (this digest).
LATER_DEFAULTS = {
    "objects_per_room": 1,
    "gqn_stack": 1,
    "gqn_model": "ab00466bf813",
    "lstm": "sb3",
    "gqn_normalize": True,
    "select_sharpness": 1.0,
    "gqn_goal_landmark": False,
    "gqn_oracle_goal": None,
    "gqn_oracle_rays": False,
    "gqn_plain_keys": [],
    "gqn_map_channels": 32,
    "gqn_map_norm": "none",
    "gqn_share_extractor": True,
    "gqn_net_arch": None,
    "gqn_extractor": "gqn",
    "gqn_vector_reading": "layer",
    "gqn_pca_dims": 64,
    "gqn_forward_aux": False,
    "gqn_forward_aux_epochs": 4,
    "gqn_online_start": "scratch",
}


def model_digest(checkpoint: str | None, map_key: bool = False) -> str:
    """What a GQN agent observes of a world model (default: the bundled one), as 12 hex digits.

    The SHA-256 of the representation network's tensors, names and bytes, but for
    its map head (``ModelConfig.map_channels``) unless the agent observes the ``map``
    key (``map_key``): the other ``gqn`` observations (``patches``, ``view_encoding``,
    ``representation``, ``landmarks``) come from the rest of that network alone. A
    model whose generator and map head were trained further with the representation
    frozen (``freeze_representation``) gives the same observations, so its runs are the same runs.
    """
    data = load_checkpoint(checkpoint or bundled_checkpoint())
    digest = hashlib.sha256()
    observed = (k for k in data["model"] if k.startswith("representation.") and (map_key or ".map_head." not in k))
    for name in sorted(observed):
        digest.update(name.encode())
        digest.update(data["model"][name].cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def same_run(saved: dict, settings: dict, variant: str) -> bool:
    """Whether a saved run's settings match, ignoring arguments that ``variant`` does not read.

    Observation keys saved under an old name (:data:`DEPRECATED_OBS_KEYS`) match their new name.
    """
    saved = {k: saved.get(k, v) for k, v in LATER_DEFAULTS.items()} | saved
    if saved.get("gqn_obs"):
        saved["gqn_obs"] = [DEPRECATED_OBS_KEYS.get(k, k) for k in saved["gqn_obs"]]
    keys = {k for k in settings if variant in VARIANT_SETTINGS.get(k, (variant,))}
    return all(saved.get(k) == settings[k] for k in keys)


def run_all(args: argparse.Namespace, runs_dir: Path) -> list[dict]:
    """Run every (seed, variant), saving each finished run to ``runs_dir/<variant>_<seed>.json`` as it ends.

    An interrupted invocation (a killed shell, a rebooted machine, a session's end)
    is picked up by running the same command again: runs already in ``runs_dir``
    with identical run settings are kept, not repeated (``--restart`` discards
    them). One file per run lets several invocations (say, the slow recurrent
    baseline in a second process) fill the same folder, and the full command then
    finds them all.
    """
    settings = run_settings(args)
    results = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for variant in args.variants:
            path = runs_dir / f"{variant}_{seed}.json"
            if path.exists() and not args.restart:
                saved = json.loads(path.read_text())
                if same_run(saved.get("settings", {}), settings, variant):
                    results.append(saved["run"])
                    print(f"{variant} seed {seed}: finished before, reused from {path}")
                    continue
            if args.only_summarize:
                continue
            result = run(variant, seed, args)
            results.append(result)
            print(f"{variant} seed {seed}: auc {result['auc']:.3f}, {result['seconds'] / 60:.1f} min", flush=True)
            runs_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps({"settings": settings, "run": result}))
    return results


def _ratio(name: str, baseline: float, mine: float, budget: int) -> dict[str, float]:
    """``baseline / mine`` of steps (or seconds) to threshold, or its bound when one side never got there."""
    if np.isfinite(mine) and np.isfinite(baseline):
        return {name: baseline / mine}
    if np.isfinite(baseline):  # mine never reached it within the budget: mine > budget
        return {f"{name}_at_most": baseline / budget}
    if np.isfinite(mine):  # the baseline never reached it: baseline > budget
        return {f"{name}_at_least": budget / mine}
    return {}


def ratio_pairs(variants: list[str]) -> list[tuple[str, str]]:
    """The ``(baseline, variant)`` pairs whose ratios are reported: each baseline over every other variant.

    The recurrent baseline is not set over the stacked-pixel one, which is itself a baseline.
    """
    return [
        (baseline, variant)
        for baseline in BASELINES
        if baseline in variants
        for variant in variants
        if variant != baseline and not (variant in BASELINES and baseline == "pixels_lstm")
    ]


def bootstrap_intervals(
    steps: dict[str, list[float]],
    pairs: list[tuple[str, str]],
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Percentile-bootstrap intervals of each variant's median steps to threshold and of median ratios.

    Each variant's seeds are resampled with replacement, independently of the other
    variants', ``resamples`` times (a fixed generator: the same runs give the same
    intervals). A run that never reached the threshold counts as infinitely many
    steps, so an interval may end at ``inf`` (a median ratio at 0 or ``inf``).

    Args:
        steps: Steps to threshold per run, by variant.
        pairs: ``(baseline, variant)`` pairs whose ``median(baseline) / median(variant)`` is wanted.
        resamples: Bootstrap resamples.
        level: Coverage of the central interval.
        seed: Seed of the resampling generator.

    Returns:
        ``steps_to_threshold_<variant>`` and ``steps_ratio_<baseline>_over_<variant>``,
        each ``[low, high]``.
    """
    rng = np.random.default_rng(seed)
    medians = {}
    for variant, values in steps.items():
        values = np.asarray(values, dtype=np.float64)
        draws = values[rng.integers(0, len(values), size=(resamples, len(values)))]  # (resamples, seeds)
        medians[variant] = np.median(draws, axis=1)  # as the headline's median: inf when either middle run is
    tail = (1 - level) / 2
    out = {}
    for variant, m in medians.items():
        out[f"steps_to_threshold_{variant}"] = np.quantile(m, [tail, 1 - tail], method="inverted_cdf").tolist()
    for baseline, variant in pairs:
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = medians[baseline] / medians[variant]  # inf / inf is nan: neither got there
        ratio = ratio[~np.isnan(ratio)]
        if len(ratio):
            interval = np.quantile(ratio, [tail, 1 - tail], method="inverted_cdf").tolist()
            out[f"steps_ratio_{baseline}_over_{variant}"] = interval
    return out


def paired_auc(
    results: list[dict], pairs: list[tuple[str, str]], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Success AUC of each variant against each baseline, on the seeds both ran (the same scenes).

    For each ``(baseline, variant)`` pair with common seeds: the mean of the per-seed
    differences ``auc(variant) - auc(baseline)``, a 95% percentile-bootstrap interval of
    that mean (seeds resampled as pairs, a fixed generator), and on how many of the seeds
    the variant's AUC is the higher.

    Returns:
        ``auc_<variant>_minus_<baseline>``: ``{"seeds", "mean", "low", "high", "variant_higher"}``.
    """
    auc = {(r["variant"], r["seed"]): r["auc"] for r in results}
    rng = np.random.default_rng(seed)
    out = {}
    for baseline, variant in pairs:
        seeds = sorted(s for v, s in auc if v == variant and (baseline, s) in auc)
        if not seeds:
            continue
        diff = np.array([auc[variant, s] - auc[baseline, s] for s in seeds])
        means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
        low, high = np.quantile(means, [0.025, 0.975], method="inverted_cdf")
        out[f"auc_{variant}_minus_{baseline}"] = {
            "seeds": len(seeds),
            "mean": float(diff.mean()),
            "low": float(low),
            "high": float(high),
            "variant_higher": int((diff > 0).sum()),
        }
    return out


def summarize(results: list[dict], args: argparse.Namespace) -> tuple[list[dict], dict[str, float]]:
    """One row per variant (median steps to threshold, mean AUC, ...) and the baseline/variant ratios.

    ``steps_ratio_<baseline>_over_<variant>`` is the baseline's median steps to
    threshold over the variant's, for the baselines ``pixels`` and ``pixels_lstm``
    (``seconds_ratio_...``: the same in wall-clock seconds). When one side never
    reached the threshold within ``args.steps``, the ratio is only bounded:
    ``..._at_most`` (the variant never reached it: ratio < baseline / steps) or
    ``..._at_least`` (the baseline never reached it: ratio > steps / variant).
    Neither reaching it gives no steps ratio; the AUC ratio is always reported.
    """
    rows = []
    for variant in args.variants:
        mine = [r for r in results if r["variant"] == variant]
        if not mine:
            continue
        rows.append(
            {
                "variant": variant,
                "seeds": len(mine),
                "steps_to_threshold": float(np.median([r["steps_to_threshold"] for r in mine])),
                "seconds_to_threshold": float(np.median([r.get("seconds_to_threshold", np.inf) for r in mine])),
                "auc": float(np.mean([r["auc"] for r in mine])),
                "final_success": float(np.nanmean([r["curve"][-1] for r in mine])),
                "minutes": sum(r["seconds"] for r in mine) / 60,
            }
        )
    by = {r["variant"]: r for r in rows}
    ratios: dict[str, float] = {}
    for baseline, variant in ratio_pairs(list(by)):
        row, base = by[variant], by[baseline]
        ratios.update(
            _ratio(
                f"steps_ratio_{baseline}_over_{variant}",
                base["steps_to_threshold"],
                row["steps_to_threshold"],
                args.steps,
            )
        )
        if baseline == "pixels":
            seconds = max(r["seconds"] for r in results if r["variant"] == baseline)
            ratios.update(
                _ratio(
                    f"seconds_ratio_pixels_over_{variant}",
                    base["seconds_to_threshold"],
                    row["seconds_to_threshold"],
                    seconds,
                )
            )
            ratios[f"auc_ratio_{variant}_over_pixels"] = row["auc"] / max(base["auc"], 1e-9)
    return rows, ratios


def _seconds_at_bins(run: dict, args: argparse.Namespace) -> np.ndarray:
    ends = (np.arange(args.bins) + 1) * args.steps / args.bins
    return np.array([seconds_at(run["episode_end_steps"], run["episode_end_seconds"], e) for e in ends])


def plot(results: list[dict], args: argparse.Namespace, path: Path) -> None:
    """Success against environment steps and against wall-clock seconds (mean and a 95% band over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = (np.arange(args.bins) + 0.5) * args.steps / args.bins
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for variant in args.variants:
        runs = [r for r in results if r["variant"] == variant]
        if not runs:
            continue
        curves = np.array([r["curve"] for r in runs], dtype=float)
        mean = np.nanmean(curves, axis=0)
        half = 1.96 * np.nanstd(curves, axis=0) / np.sqrt(len(curves))
        label = f"{variant} ({len(runs)} seeds)"
        axes[0].plot(steps, mean, label=label)
        axes[0].fill_between(steps, mean - half, mean + half, alpha=0.2)
        if all("episode_end_steps" in r for r in runs):
            seconds = np.mean([_seconds_at_bins(r, args) for r in runs], axis=0)
            axes[1].plot(seconds / 60, mean, label=label)
    for ax, xlabel in zip(axes, ("environment steps", "wall-clock minutes on this machine"), strict=True):
        ax.axhline(args.threshold, color="grey", linestyle=":", linewidth=1)
        ax.set(xlabel=xlabel, ylabel="success rate (training episodes)")
    objects = getattr(args, "objects_per_room", 1)
    scene = f"{args.env_id}, {args.episode_steps}-step episodes" + (
        f", {objects} objects a room" if objects != 1 else ""
    )
    axes[0].set_title(f"PPO ({args.ppo} settings) on {scene}")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="GQNMazeScene-S2-v0")
    parser.add_argument("--variants", nargs="+", default=["gqn", "pixels", "state_oracle", "pixels_lstm"])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--ppo", choices=sorted(PPO_SETTINGS), default="steady", help="shared PPO settings (agents.rl)")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first_seed..first_seed+seeds-1")
    parser.add_argument("--episode-steps", type=int, default=200)
    parser.add_argument("--pixel-size", type=int, default=64)
    parser.add_argument(
        "--objects-per-room",
        type=int,
        default=1,
        help="distractor objects in each room of the scene (GQNMazeScene's objects_per_room, 0 to 4)",
    )
    parser.add_argument(
        "--gqn-obs",
        nargs="+",
        default=["patches", "view_encoding", "viewpoint"],
        help="observation keys of the GQN variants",
    )
    parser.add_argument(
        "--gqn-checkpoint",
        default=None,
        help="world model of gqn and gqn_lstm (default: the bundled one); "
        "runs are told apart by a digest of its representation network",
    )
    parser.add_argument("--gqn-stack", type=int, default=1, help="observations stacked for gqn and gqn_lstm")
    parser.add_argument(
        "--gqn-normalize",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="standardise gqn and gqn_lstm features by running statistics (VecNormalize)",
    )
    parser.add_argument(
        "--lstm", choices=sorted(LSTM_POLICIES), default="sb3", help="LSTM of gqn_lstm and pixels_lstm (agents.rl)"
    )
    parser.add_argument(
        "--select-sharpness",
        type=float,
        default=1.0,
        help="scale of the learned channel selection over landmarks (agents.features.RecordSelect)",
    )
    parser.add_argument(
        "--gqn-goal-landmark",
        action="store_true",
        help="replace the landmarks key by the row that marks the agent's successes (agents.goal_landmark)",
    )
    parser.add_argument(
        "--gqn-oracle-goal",
        choices=GOAL_MODES,
        default=None,
        help="a diagnostic: add the goal's privileged position to the gqn observation (agents.oracle.PrivilegedGoal)",
    )
    parser.add_argument(
        "--gqn-oracle-rays",
        action="store_true",
        help="a diagnostic: add the oracle's free distances along 8 rays to the gqn observation "
        "(agents.oracle.PrivilegedRays)",
    )
    parser.add_argument(
        "--gqn-plain-keys",
        nargs="*",
        default=[],
        help="observation keys read without VecNormalize and LayerNorm (inputs already on a fixed scale)",
    )
    parser.add_argument(
        "--gqn-map-channels",
        type=int,
        default=32,
        help="channels of the extractor's convolutions over the patches map (agents.features.GQNMazeExtractor)",
    )
    parser.add_argument(
        "--gqn-map-norm",
        choices=MAP_NORMS,
        default="none",
        help="how the extractor scales the patches map before its convolutions; 'layer' goes with "
        "--gqn-plain-keys patches, which keeps the map out of VecNormalize",
    )
    parser.add_argument(
        "--gqn-share-extractor",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="gqn, gqn_online: one features extractor for policy and value (SB3's default), or one each",
    )
    parser.add_argument(
        "--gqn-extractor",
        choices=("gqn", "flat", "pca"),
        default="gqn",
        help="GQN variants: how the policy reads the observation: agents.features.GQNMazeExtractor "
        "(a network per key), flat (SB3's CombinedExtractor: every key flattened, read by the heads directly) "
        "or pca (gqn: as flat, the patches map first cut to --gqn-pca-dims by a fixed whitening PCA)",
    )
    parser.add_argument(
        "--gqn-pca-dims",
        type=int,
        default=64,
        help="with --gqn-extractor pca: principal components of the patches map the policy reads",
    )
    parser.add_argument(
        "--gqn-vector-reading",
        choices=VECTOR_READINGS,
        default="layer",
        help="GQN variants: each vector key through a layer of its own (layer) or straight to the heads (raw)",
    )
    parser.add_argument(
        "--gqn-forward-aux",
        action="store_true",
        help="gqn, gqn_online: train the features extractor also to predict the next frame's view_encoding "
        "from this observation and the action (agents.auxiliary.ForwardPrediction)",
    )
    parser.add_argument(
        "--gqn-forward-aux-epochs",
        type=int,
        default=4,
        help="passes of the auxiliary loss over each rollout (with --gqn-forward-aux)",
    )
    parser.add_argument(
        "--gqn-net-arch",
        type=int,
        nargs="+",
        default=None,
        help="gqn, gqn_online: hidden layers of the policy and value heads (default: SB3's 64 64)",
    )
    parser.add_argument("--wm-updates", type=int, default=8, help="world-model steps per rollout (gqn_online)")
    parser.add_argument(
        "--gqn-online-start",
        choices=ONLINE_STARTS,
        default="scratch",
        help="gqn_online: a new cpu-preset world model, or the bundled one trained further (online_world_model)",
    )
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--bins", type=int, default=20, help="bins of the plotted curves and the AUC")
    parser.add_argument("--window", type=int, default=50, help="episodes in the rolling success rate for the threshold")
    parser.add_argument(
        "--device",
        default="cpu",
        help="torch device of the policy (cpu, cuda); the envs and the bundled world model stay on the CPU",
    )
    parser.add_argument("--quick", action="store_true", help="4k steps, 1 seed: a smoke run of a few minutes")
    parser.add_argument(
        "--only-summarize",
        action="store_true",
        help="run nothing: summarise the finished runs found for these settings",
    )
    add_output_options(parser)
    parser.add_argument(
        "--restart", action="store_true", help="ignore runs saved by an interrupted invocation with the same settings"
    )
    args = parser.parse_args()
    if args.gqn_forward_aux_epochs != LATER_DEFAULTS["gqn_forward_aux_epochs"] and not args.gqn_forward_aux:
        parser.error("--gqn-forward-aux-epochs is a setting of --gqn-forward-aux")
    if args.gqn_forward_aux_epochs < 1:
        parser.error(f"--gqn-forward-aux-epochs must be >= 1, got {args.gqn_forward_aux_epochs}")
    if args.quick:
        args.steps, args.seeds, args.bins = 4096, 1, 8
    args.gqn_model = model_digest(args.gqn_checkpoint, map_key="map" in args.gqn_obs)

    name = "rl_sample_efficiency_quick" if args.quick else "rl_sample_efficiency"
    json_path = output_path(name, args.out, args.save)
    runs_dir = json_path.parent / f"{json_path.stem}_runs"
    results = run_all(args, runs_dir)
    if not results:
        raise SystemExit(f"No finished runs with these settings in {runs_dir}")
    rows, ratios = summarize(results, args)
    steps = {
        row["variant"]: [r["steps_to_threshold"] for r in results if r["variant"] == row["variant"]] for row in rows
    }
    intervals = bootstrap_intervals(steps, ratio_pairs(list(steps)))
    columns = ["variant", "seeds", "steps_to_threshold", "seconds_to_threshold", "auc", "final_success", "minutes"]
    print(format_table(rows, columns))
    for key, value in ratios.items():
        print(f"{key}: {value:.3g}")
    print("95% bootstrap intervals (seeds resampled within each variant):")
    for key, (low, high) in intervals.items():
        print(f"  {key}: {low:.3g} to {high:.3g}")
    paired = paired_auc(results, ratio_pairs(list(steps)))
    print("success AUC on the seeds both ran (mean difference, 95% bootstrap interval, seeds where higher):")
    for key, d in paired.items():
        print(f"  {key}: {d['mean']:+.3f} ({d['low']:+.3f} to {d['high']:+.3f}), {d['variant_higher']} of {d['seeds']}")
    png = json_path.with_suffix(".png")
    plot(results, args, png)
    payload = {
        "args": vars(args),
        "rows": rows,
        "ratios": ratios,
        "intervals_95": intervals,
        "auc_paired": paired,
        "runs": results,
    }
    path = write_json(name, payload, json_path)
    print(f"wrote {path} and {png}")


if __name__ == "__main__":
    main()

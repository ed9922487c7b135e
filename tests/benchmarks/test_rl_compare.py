import json

import numpy as np
import pytest

from benchmarks import rl_compare


def _save(folder, variant, seed, budget, ends, successes):
    folder.mkdir(exist_ok=True)
    run = {"variant": variant, "seed": seed, "episode_end_steps": ends, "episode_successes": successes}
    (folder / f"{variant}_{seed}.json").write_text(json.dumps({"settings": {"steps": budget}, "run": run}))


def test_runs_are_scored_on_their_first_steps_only():
    # 10 failures, then 10 successes: the rolling rate of 4 reaches 0.5 at the 12th episode (step 1150).
    ends = [100 * i + 50 for i in range(20)]
    run = {"variant": "gqn", "seed": 0, "episode_end_steps": ends, "episode_successes": [0] * 10 + [1] * 10}
    full = rl_compare.score(run, budget=2000, until=2000, threshold=0.5, window=4, bins=2)
    assert full["steps_to_threshold"] == 1150
    assert full["auc"] == pytest.approx(0.5)  # bins 0-1000 (all failures) and 1000-2000 (all successes)
    early = rl_compare.score(run, budget=2000, until=1000, threshold=0.5, window=4, bins=2)
    assert early["steps_to_threshold"] == np.inf and early["auc"] == 0.0
    with pytest.raises(ValueError, match="fewer than"):
        rl_compare.score(run, budget=1000, until=2000, threshold=0.5, window=4, bins=2)


def test_load_reads_the_seeds_of_one_variant_from_a_folder(tmp_path):
    _save(tmp_path / "a", "pixels", 0, 500, [100], [1])
    _save(tmp_path / "a", "pixels", 3, 500, [100], [0])
    label, runs = rl_compare.load(f"{tmp_path / 'a'}:pixels=stacked", [0, 1, 2])
    assert label == "stacked" and [(r["seed"], budget) for r, budget in runs] == [(0, 500)]
    with pytest.raises(FileNotFoundError, match="no gqn runs"):
        rl_compare.load(f"{tmp_path / 'a'}:gqn", [0])
    with pytest.raises(ValueError, match="FOLDER:VARIANT"):
        rl_compare.load("pixels", [0])

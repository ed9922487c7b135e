"""Benchmarks write outside the committed results unless told to (--save)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys

import pytest

from benchmarks._common import RESULTS_DIR, RUNS_DIR, add_output_options, output_path, write_json

#: Every benchmark script with a JSON result.
BENCHMARKS = [
    "collection_scaling",
    "collector_coverage",
    "env_speed",
    "gqn_maze_speed",
    "long_episode_imagination",
    "model_speed",
    "rl_probes",
    "rl_sample_efficiency",
    "world_model",
]


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_output_options(parser)
    return parser.parse_args(argv)


def test_without_save_the_output_is_outside_the_committed_results(tmp_path):
    args = _parse([])
    path = output_path("env_speed", args.out, args.save)
    assert RESULTS_DIR not in path.parents and path.parent == RUNS_DIR
    assert RUNS_DIR.relative_to(RESULTS_DIR.parent.parent).parts[0] == "runs"  # git-ignored
    args = _parse(["--save"])
    assert output_path("env_speed", args.out, args.save) == RESULTS_DIR / "env_speed.json"
    args = _parse(["--out", str(tmp_path / "x.json")])
    assert output_path("env_speed", args.out, args.save) == tmp_path / "x.json"
    written = write_json("env_speed", {"rows": []}, args.out, args.save)
    assert json.loads(written.read_text())["benchmark"] == "env_speed"


def test_out_and_save_are_one_or_the_other(capsys):
    with pytest.raises(SystemExit):
        _parse(["--save", "--out", "x.json"])
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(ValueError, match="either out= or save=True"):
        output_path("env_speed", "x.json", save=True)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_offers_save_and_defaults_outside_the_results(name, monkeypatch, capsys):
    module = importlib.import_module(f"benchmarks.{name}")
    monkeypatch.setattr(sys, "argv", [f"benchmarks.{name}", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        module.main()
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--save" in out and "runs/benchmarks/<name>.json" in out

"""Smoke runs of the command-line tool with tiny budgets, in fresh processes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from world_model import SceneStore, load_checkpoint


def run_gqn_gym(*args, cwd, timeout=300):
    """``gqn-gym ARGS`` in a fresh process; the finished process, whatever its exit status."""
    return subprocess.run(
        [sys.executable, "-m", "gqn_env.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def gqn_gym(*args, cwd):
    result = run_gqn_gym(*args, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_collect_train_resume_evaluate(tmp_path):
    out = gqn_gym(
        "collect", "--out", "s.gqnstore", "--scenes", "3", "--steps", "30", "--image-size", "16", cwd=tmp_path
    )
    assert "24 frames" in out
    common = ["--preset", "tiny", "--checkpoint", "c.pt", "--no-progress", "--env-id", "GQNMazeScene-S2-v0"]
    gqn_gym("train", *common, "--store", "s.gqnstore", "--offline", "--steps", "4", cwd=tmp_path)
    assert load_checkpoint(tmp_path / "c.pt")["step"] == 4
    gqn_gym(
        "collect",
        "--out",
        "t.gqnstore",
        "--scenes",
        "2",
        "--steps",
        "30",
        "--image-size",
        "16",
        "--seed",
        "1",
        cwd=tmp_path,
    )
    two = ["--store", "s.gqnstore", "t.gqnstore", "--offline", "--steps", "1", "--set", "num_layers=3"]
    gqn_gym("train", "--preset", "tiny", "--checkpoint", "d.pt", "--no-progress", *two, cwd=tmp_path)
    assert load_checkpoint(tmp_path / "d.pt")["config"]["model"]["num_layers"] == 3
    bad = run_gqn_gym("train", "--preset", "tiny", "--set", "layers=3", "--steps", "1", cwd=tmp_path, timeout=120)
    assert bad.returncode != 0 and "--set" in bad.stderr and "layers=3" in bad.stderr
    out = gqn_gym("train", *common, "--resume", "--steps", "6", "--warmup-scenes", "2", cwd=tmp_path)
    assert "resuming from c.pt at step 4" in out
    data = load_checkpoint(tmp_path / "c.pt")
    assert data["step"] == 6 and data["extra"]["mean_image"].shape == (16, 16, 3)
    # A resumed run may extend its schedules, not change its architecture.
    out = gqn_gym("train", *common, "--resume", "--steps", "7", "--set", "lr_anneal_steps=500", cwd=tmp_path)
    assert "'lr_anneal_steps': 500" in out
    assert load_checkpoint(tmp_path / "c.pt")["config"]["train"]["lr_anneal_steps"] == 500
    bad = run_gqn_gym("train", *common, "--resume", "--steps", "8", "--set", "num_layers=3", cwd=tmp_path, timeout=120)
    assert bad.returncode != 0 and "architecture" in bad.stderr and "num_layers" in bad.stderr
    assert load_checkpoint(tmp_path / "c.pt")["step"] == 7
    out = gqn_gym(
        "evaluate",
        "--checkpoint",
        "c.pt",
        "--scenes",
        "2",
        "--context",
        "3",
        "--env-id",
        "GQNMazeScene-S2-v0",
        cwd=tmp_path,
    )
    assert "shuffled" in out and "nearest" in out


@pytest.mark.slow
def test_imagine_writes_videos_and_panel(tmp_path):
    gqn_gym(
        "train",
        "--preset",
        "tiny",
        "--checkpoint",
        "c.pt",
        "--no-progress",
        "--steps",
        "1",
        "--warmup-scenes",
        "1",
        "--env-id",
        "GQNMazeScene-S2-v0",
        cwd=tmp_path,
    )
    out = gqn_gym(
        "imagine", "--checkpoint", "c.pt", "--steps", "6", "--env-id", "GQNMaze-S2-v0", "--out", "vid", cwd=tmp_path
    )
    for name in ("imagination.mp4", "imagination.gif", "unvisited.png"):
        assert (tmp_path / "vid" / name).stat().st_size > 1000, name
    assert "imagination.mp4" in out


@pytest.mark.slow
def test_collect_with_worker_processes_feeds_one_store(tmp_path):
    common = ["collect", "--out", "s.gqnstore", "--env-id", "GQNMazeScene-S2-v0", "--image-size", "16"]
    out = gqn_gym(*common, "--scenes", "4", "--steps", "10", "--workers", "2", cwd=tmp_path)
    assert "wrote" in out
    ids, images, viewpoints = (
        np.concatenate(part) for part in zip(*SceneStore(tmp_path / "s.gqnstore").iter_chunks(), strict=True)
    )
    assert images.shape[1:] == (16, 16, 3) and len(ids) == len(viewpoints) >= 2 * 20
    assert len(np.unique(ids)) >= 4  # a scene id per episode, episodes cut at --steps


@pytest.mark.slow
def test_interrupted_collect_keeps_its_frames_and_says_so(tmp_path):
    import os
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "gqn_env.cli", "collect", "--out", "s.gqnstore", "--scenes", "100000"]
        + ["--image-size", "16", "--chunk-frames", "8"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal
    )
    store = tmp_path / "s.gqnstore"
    deadline = time.monotonic() + 120
    while (not store.exists() or store.stat().st_size < 2000) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted:" in err and "Traceback" not in err
    frames = int(err.split("interrupted: ")[1].split(" frames")[0])
    assert frames > 0 and sum(len(ids) for ids, _, _ in SceneStore(os.fspath(store)).iter_chunks()) == frames


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenes", "1"], "--scenes must be >= 2"),
        (["--checkpoint", "missing.pt"], "No checkpoint at missing.pt"),
        (["--checkpoint", "bad.pt"], "bad.pt is not a checkpoint"),
        (["--device", "nonsense"], "must name a torch device"),
    ],
)
def test_evaluate_refuses_bad_arguments_in_one_line(tmp_path, args, message):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint" * 10)
    result = run_gqn_gym("evaluate", *args, cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("checkpoint", "message"), [("missing.pt", "No checkpoint at missing.pt"), ("bad.pt", "bad.pt")]
)
def test_imagine_refuses_a_bad_checkpoint_in_one_line(tmp_path, checkpoint, message):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint" * 10)
    result = run_gqn_gym("imagine", "--checkpoint", checkpoint, "--steps", "2", cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    assert f"gqn-gym imagine: {message}" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_train_threads_default_to_one_for_tiny_models_and_ranks():
    from agents.world_model_training import train_threads

    assert train_threads(None, "tiny", 1) == 1
    assert train_threads(None, "cpu", 2) == 1  # one core per torchrun rank
    assert train_threads(3, "tiny", 1) == 3
    with pytest.raises(ValueError, match="--threads"):
        train_threads(0, "cpu", 1)


HEAVY_MODULES = ("torch", "miniworld", "pyglet.gl", "imageio", "agents.collectors")


@pytest.mark.parametrize("command", ["imagine", "demo", "tour"])
def test_example_commands_help_is_light_names_the_command_and_shows_defaults(command):
    code = (
        "import sys\n"
        "from gqn_env.cli import main\n"
        "try:\n"
        f"    main([{command!r}, '--help'])\n"
        "except SystemExit as e:\n"
        "    print('EXIT', e.code)\n"
        f"print('HEAVY', [m for m in {HEAVY_MODULES!r} if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert f"usage: gqn-gym {command} [-h]" in out
    assert "(default: outputs/" in out and "``" not in out
    assert "EXIT 0" in out and "HEAVY []" in out  # parsed before gymnasium's scenes, torch or OpenGL load


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["imagine", "--steps", "-5"], "gqn-gym imagine: error: --steps must be >= 1, got -5"),
        (["imagine", "--steps", "0"], "--steps must be >= 1, got 0"),
        (["demo", "--fps", "0"], "gqn-gym demo: error: --fps must be >= 1, got 0"),
        (["imagine", "--unvisited", "-1"], "--unvisited must be >= 0, got -1"),
        (["tour", "--frames", "0"], "gqn-gym tour: error: --frames must be >= 1, got 0"),
    ],
)
def test_bad_example_options_exit_with_one_line(argv, message, capsys):
    from gqn_env.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == message or err.strip().endswith(message)
    assert len(err.strip().splitlines()) == 1


def test_top_level_help_is_plain_text(capsys):
    from gqn_env.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "gqn-gym evaluate" in out and "Run gqn-gym <command> --help" in out
    assert "``" not in out and "::" not in out


def test_write_video_refuses_a_frame_rate_of_zero(tmp_path):
    from gqn_env.wrappers.imagination import write_video

    frames = [np.zeros((16, 16, 3), np.uint8)] * 2
    for fps in (0, -1):
        with pytest.raises(ValueError, match="fps must be a number > 0"):
            write_video(frames, tmp_path / "v.gif", fps=fps)
    assert not (tmp_path / "v.gif").exists()


@pytest.mark.slow
def test_evaluate_reports_progress_on_stderr(capsys):
    from gqn_env.cli import main

    main(["evaluate", "--scenes", "2", "--context", "2", "--env-id", "GQNMazeScene-S2-v0"])
    captured = capsys.readouterr()
    assert "held-out scenes" in captured.err and "2/2" in captured.err and "evaluate" in captured.err
    assert "shuffled" in captured.out
    main(["evaluate", "--scenes", "2", "--context", "2", "--env-id", "GQNMazeScene-S2-v0", "--no-progress"])
    assert "held-out scenes" not in capsys.readouterr().err


def test_train_frame_skip_reaches_the_run_settings(tmp_path):
    bad = run_gqn_gym("train", "--preset", "tiny", "--steps", "1", "--frame-skip", "0", cwd=tmp_path, timeout=120)
    assert bad.returncode != 0 and "frame_skip" in bad.stderr, bad.stderr[-2000:]
    assert not (tmp_path / "runs").exists()  # refused before anything was built or written

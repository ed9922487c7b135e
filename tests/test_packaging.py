"""The installed wheel works on its own: ``gqn-gym demo`` outside the checkout, with the bundled model."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installed_outside_the_checkout_runs_the_demo(tmp_path):
    # Build from a copy of the packaged files, so the checkout gets no build/ folder.
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("gqn_env", "world_model", "agents"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)]
    subprocess.run(build, check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("gqn_gym-*.whl")
    assert "gqn_env/assets/gqn_maze_cpu.pt" in zipfile.ZipFile(wheel).namelist()
    site_dir = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site_dir), str(wheel)], check=True, timeout=300)

    # -S skips the .pth files, among them the editable install's finder that would import the checkout;
    # the wheel's folder comes first, then the venv's packages (torch, gymnasium, ...).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site_dir), *site.getsitepackages()])}
    env.pop("PYTHONSAFEPATH", None)
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()

    def python(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-S", *args], cwd=run_dir, env=env, capture_output=True, text=True, timeout=300
        )

    where = python("-c", "import agents, gqn_env, world_model; print(gqn_env.__file__, world_model.__file__)")
    assert where.returncode == 0, where.stderr[-2000:]
    assert all(Path(p).is_relative_to(site_dir) for p in where.stdout.split()), where.stdout
    out = tmp_path / "video"
    demo = python(
        "-m", "gqn_env.cli", "demo", "--env-id", "GQNMaze-S2-v0", "--steps", "4", "--unvisited", "1", "--out", str(out)
    )
    assert demo.returncode == 0, demo.stderr[-3000:]
    for name in ("imagination.mp4", "imagination.gif", "unvisited.png"):
        assert (out / name).stat().st_size > 1000, name
    assert "5 frames" in demo.stdout

"""Headless start-up in fresh interpreters (no DISPLAY), whatever the import order."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _run(code: str, **env_overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"DISPLAY", "WAYLAND_DISPLAY", "PYGLET_HEADLESS"}}
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


MAKE = "env = gym.make('GQNMazeScene-S2-v0', image_size=16); obs, _ = env.reset(seed=0); print(obs['image'].shape)"


@pytest.mark.parametrize(
    "prelude",
    [
        "import gymnasium as gym; import gqn_env",
        "import pyglet; import gymnasium as gym; import gqn_env",
        "import gqn_env; import miniworld; import gymnasium as gym",
        "import gymnasium as gym",  # gym.make with the module prefix imports gqn_env itself
    ],
)
def test_renders_without_a_display(prelude):
    make = MAKE if "gqn_env" in prelude else MAKE.replace("'GQNMazeScene", "'gqn_env:GQNMazeScene")
    result = _run(f"{prelude}; {make}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(16, 16, 3)" in result.stdout


def test_light_imports_do_not_start_opengl():
    result = _run("import sys, gqn_env, world_model; print('pyglet.gl' in sys.modules, 'miniworld' in sys.modules)")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False False"


def test_missing_opengl_gives_one_clear_error():
    # Point GLVND at no EGL vendor: the same failure a machine without Mesa sees.
    result = _run(
        f"import gymnasium as gym; import gqn_env; {MAKE}", __EGL_VENDOR_LIBRARY_FILENAMES="/nonexistent.json"
    )
    assert result.returncode != 0
    assert "OpenGLUnavailableError" in result.stderr
    assert "libegl-mesa0" in result.stderr and "libgl1-mesa-dri" in result.stderr


def test_renders_on_a_machine_without_font_libraries():
    # GPU servers often lack FreeType/Fontconfig; pyglet's text then fails to import, and
    # MiniWorld builds a text label in every env. Simulate it: pyglet finds no freetype.
    no_fonts = (
        "import pyglet.lib; real = pyglet.lib.load_library\n"
        "def load(*names, **kw):\n"
        "    if names[0] in ('freetype', 'fontconfig'): raise ImportError(f'Library {names[0]!r} not found.')\n"
        "    return real(*names, **kw)\n"
        "pyglet.lib.load_library = load\n"
    )
    draw = "env.unwrapped.text_label.draw()"
    result = _run(f"{no_fonts}import gymnasium as gym; import gqn_env\n{MAKE}\n{draw}")
    assert "(16, 16, 3)" in result.stdout, result.stderr[-2000:]  # the env built and rendered
    assert "OpenGLUnavailableError" in result.stderr and "libfreetype6" in result.stderr  # drawing text fails clearly

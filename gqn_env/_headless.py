"""Headless OpenGL set-up for MiniWorld.

MiniWorld renders through pyglet. On a machine without a display, pyglet must be
told to use EGL (``pyglet.options["headless"] = True``) *before* anything imports
``pyglet.gl``; MiniWorld 2.1 imports ``pyglet.gl`` at import time, so setting
``PYOPENGL_PLATFORM`` is not enough (see ``shared/FACTS.md``).

:func:`configure` is called by ``import gqn_env``, before MiniWorld is imported.
It chooses headless EGL when no X11 or Wayland display is available, or when the
user asks for it with ``PYGLET_HEADLESS=1``. ``GQN_ENV_HEADLESS=0`` opts out.
:func:`raise_missing_opengl` turns pyglet's low-level failures into one error
that names the system packages to install.
"""

from __future__ import annotations

import os
import sys

#: Debian/Ubuntu packages that provide Mesa's software EGL renderer.
MESA_PACKAGES = "libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libglu1-mesa"


class OpenGLUnavailableError(RuntimeError):
    """Raised when no OpenGL context can be created for MiniWorld."""


def _wants_headless() -> bool:
    if os.environ.get("GQN_ENV_HEADLESS", "") == "0":
        return False
    if os.environ.get("PYGLET_HEADLESS", "").lower() in {"1", "true", "yes"}:
        return True
    return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def configure() -> bool:
    """Switch pyglet to headless EGL rendering if no display is available.

    Safe to call many times and in any import order: if ``pyglet.gl`` is already
    imported, the choice has been made and is left alone.

    Returns:
        Whether pyglet is (now) in headless mode.
    """
    if "pyglet.gl" in sys.modules:
        import pyglet

        return bool(pyglet.options.get("headless", False))
    if not _wants_headless():
        return False
    # Child processes (AsyncVectorEnv with spawn/forkserver) inherit this.
    os.environ.setdefault("PYGLET_HEADLESS", "1")
    try:
        import pyglet
    except ImportError:  # pragma: no cover - pyglet is a hard dependency
        return False
    pyglet.options["headless"] = True
    return True


def raise_missing_opengl(error: BaseException) -> None:
    """Raise :class:`OpenGLUnavailableError` explaining how to get OpenGL.

    Args:
        error: The exception pyglet or MiniWorld raised.

    Raises:
        OpenGLUnavailableError: Always.
    """
    raise OpenGLUnavailableError(
        "MiniWorld could not open an OpenGL context "
        f"({type(error).__name__}: {error}). gqn_env renders headless through "
        "Mesa's EGL software renderer; install it with\n"
        f"    sudo apt-get install {MESA_PACKAGES}\n"
        "(or your distribution's Mesa EGL packages). To use a real display "
        "instead, set DISPLAY and GQN_ENV_HEADLESS=0."
    ) from None  # one clear error; the cause is in the message

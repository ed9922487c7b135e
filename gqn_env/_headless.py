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


class _NoTextLabel:
    """Stands in for ``pyglet.text.Label`` where pyglet's text cannot load; fails only if drawn."""

    def __init__(self, *args: object, error: BaseException | None = None, **kwargs: object) -> None:
        self.text = ""
        self._error = error

    def draw(self) -> None:
        raise OpenGLUnavailableError(
            f"MiniWorld's text overlay needs pyglet's fonts, which could not load ({self._error}); "
            "install FreeType and Fontconfig (Debian: libfreetype6 libfontconfig1 fonts-dejavu-core)"
        )


class _NoText:
    """Stands in for the ``pyglet.text`` module: only ``Label``, which MiniWorld builds in every env."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def Label(self, *args: object, **kwargs: object) -> _NoTextLabel:  # noqa: N802 (pyglet's name)
        return _NoTextLabel(*args, error=self.error, **kwargs)


def allow_missing_fonts() -> bool:
    """Let MiniWorld build envs on machines without FreeType or Fontconfig (GPU servers often lack them).

    Every ``MiniWorldEnv`` creates a ``pyglet.text.Label`` in its constructor, used only
    by its human-mode window; ``pyglet.text`` fails to import without those libraries.
    In headless mode, where no window is drawn, a missing font library then only
    replaces ``pyglet.text`` with a stand-in whose label raises if it is ever drawn.
    Call after pyglet.gl is imported (pyglet.text imports it).

    Returns:
        Whether the stand-in was installed.
    """
    import pyglet

    if not pyglet.options.get("headless", False):
        return False
    try:
        import pyglet.text  # noqa: F401
    except ImportError as err:  # pyglet.lib: 'Library "freetype" not found.' (or fontconfig)
        pyglet.text = _NoText(err)
        return True
    return False


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

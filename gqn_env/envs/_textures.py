"""Fast texture loading for MiniWorld.

MiniWorld 2.1's ``Texture.load`` asks pyglet for the PNG's pixels as RGBA.
Its textures are RGB, so pyglet converts them with a Python regular expression
substitution per pixel: about a second per 1024x1024 texture on our machine,
paid on the first reset that uses each texture in every process (every vector
env worker, every test process). Measured with cProfile: 11 resets of a 3x3
maze spent 13.7 s of 18.4 s in ``pyglet.image._convert``.

:func:`install` replaces ``Texture.load`` with one that decodes the PNG with
Pillow, adds the alpha channel in numpy and uploads the same bytes with the same
OpenGL calls as MiniWorld, so the rendered frames are unchanged: the RGB bytes
equal pyglet's (tested), and alpha, which pyglet fills with a copy of red, is
dropped by the ``GL_RGB`` internal format either way.
"""

from __future__ import annotations

import numpy as np


def texture_rgba(path: str) -> tuple[int, int, bytes]:
    """``(width, height, bytes)``: the PNG as RGBA rows, bottom row first (OpenGL's order)."""
    from PIL import Image

    with Image.open(path) as img:
        rgba = np.asarray(img.convert("RGBA"))  # (H, W, 4), top row first
    return rgba.shape[1], rgba.shape[0], np.ascontiguousarray(rgba[::-1]).tobytes()


def _load(cls: type, tex_path: str) -> object:
    """Drop-in for ``miniworld.opengl.Texture.load`` (same GL calls, numpy conversion)."""
    import pyglet
    from pyglet import gl

    width, height, data = texture_rgba(tex_path)
    tex = pyglet.image.Texture.create(width, height)
    gl.glEnable(tex.target)
    gl.glBindTexture(tex.target, tex.id)
    gl.glTexImage2D(gl.GL_TEXTURE_2D, 0, gl.GL_RGB, width, height, 0, gl.GL_RGBA, gl.GL_UNSIGNED_BYTE, data)
    gl.glHint(gl.GL_GENERATE_MIPMAP_HINT, gl.GL_NICEST)
    gl.glGenerateMipmap(gl.GL_TEXTURE_2D)
    gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_MAG_FILTER, gl.GL_LINEAR)
    gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_MIN_FILTER, gl.GL_LINEAR_MIPMAP_LINEAR)
    gl.glBindTexture(gl.GL_TEXTURE_2D, 0)
    return tex


def install() -> None:
    """Make ``miniworld.opengl.Texture.load`` use :func:`texture_rgba` (idempotent)."""
    from miniworld.opengl import Texture

    if getattr(Texture.load, "__func__", None) is not _load:
        Texture.load = classmethod(_load)

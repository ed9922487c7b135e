#!/usr/bin/env bash
# Make sure Mesa's EGL software renderer is present (MiniWorld renders through it
# when there is no display). Installs the Debian packages when run as root on a
# Debian/Ubuntu machine that lacks them; otherwise prints what to install.
set -euo pipefail
PKGS="libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libglu1-mesa"
if ldconfig -p 2>/dev/null | grep -q 'libEGL_mesa.so' && ldconfig -p 2>/dev/null | grep -q 'libGLU.so'; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "Installing Mesa EGL ($PKGS)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $PKGS >/dev/null
elif command -v apt-get >/dev/null 2>&1; then
  echo "Mesa EGL is missing: run  sudo apt-get install $PKGS" >&2
  exit 1
else
  echo "warning: could not find Mesa's EGL (libEGL_mesa); install your distribution's Mesa EGL/GL packages" >&2
fi

"""Atomic file writes: write a temporary sibling, fsync it, rename it over the target.

A reader sees the old file or the new one, never a torn one, even if the writer is
killed (``kill -9``) in the middle. A killed writer leaves its temporary file
behind; the next write to the same target removes the temporaries of writers on
this host that are no longer running (a live writer's file is never touched, and
neither is another host's on a shared filesystem).

Temporary names: ``.<name>.<host>-<pid>-<token>.tmp<suffix>`` in the target's
folder; the target's suffix is kept last so that libraries that pick a format from
the extension (imageio) still do.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path


def _host() -> str:
    return socket.gethostname().replace("-", "_").replace(os.sep, "_") or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Delete temporaries of ``path`` left by dead writers on this host; return what was removed."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{path.name}.{_host()}-*-*.tmp{path.suffix}"):
        pid_text = tmp.name[len(f".{path.name}.{_host()}-") :].split("-", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _alive(int(pid_text)):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename inside ``path``'s folder durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(Path(path).parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path to write; on a clean exit it replaces ``path`` atomically.

    Usage::

        with atomic_path("runs/model.pt") as tmp:
            torch.save(state, tmp)

    On an exception the temporary is deleted and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.{_host()}-{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # flush the data to disk before the rename makes it visible
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path)

"""Atomic writes: all or nothing, and no temporaries left behind by dead writers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from world_model.atomic import _host, atomic_path, remove_stale_temporaries


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def temp_name(target, pid: int) -> str:
    return f".{target.name}.{_host()}-{pid}-abcd1234.tmp{target.suffix}"


def test_write_replaces_the_target_with_the_given_mode(tmp_path):
    target = tmp_path / "sub" / "out.json"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".json"
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_an_error_while_writing_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk on fire")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    target = tmp_path / "model.pt"
    dead = tmp_path / temp_name(target, dead_pid())
    live = tmp_path / temp_name(target, os.getppid())  # our parent is running
    other_host = tmp_path / f".model.pt.elsewhere-{dead_pid()}-abcd1234.tmp.pt"
    other_file = tmp_path / temp_name(tmp_path / "other.pt", dead_pid())
    for p in (dead, live, other_host, other_file):
        p.write_bytes(b"partial")
    assert remove_stale_temporaries(target) == [dead]
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["model.pt", live.name, other_host.name, other_file.name]
    )

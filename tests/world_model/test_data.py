from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from world_model.data import SceneBuffer, SceneStore, StoreCorruptionWarning, StoreWriter

S, D = 8, 7


def frames(scene_id: int, n: int, seed: int = 0):
    """Frames whose pixels encode their scene id, so a sample can be traced back."""
    rng = np.random.default_rng(seed + scene_id)
    images = np.full((n, S, S, 3), scene_id % 256, dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(n) % 256  # frame index
    viewpoints = rng.uniform(-1, 1, (n, D)).astype(np.float32)
    viewpoints[:, 0] = scene_id
    return np.full(n, scene_id, dtype=np.int64), images, viewpoints


def test_batches_group_by_scene_with_distinct_frames():
    buf = SceneBuffer(image_size=S, max_scenes=10)
    for sid in range(5):
        buf.add_batch(*frames(sid, 12))
    batch = buf.sample(16, np.random.default_rng(0), num_context=(2, 6))
    k = batch["context_images"].shape[1]
    assert 2 <= k <= 6 and batch["context_viewpoints"].shape == (16, k, D)
    for b, sid in enumerate(batch["scene_ids"]):
        assert np.all(batch["context_images"][b, :, 1, 1, 0] == sid) and batch["query_images"][b, 1, 1, 0] == sid
        assert np.all(batch["context_viewpoints"][b, :, 0] == sid) and batch["query_viewpoints"][b, 0] == sid
        idx = list(batch["context_images"][b, :, 0, 0, 0]) + [batch["query_images"][b, 0, 0, 0]]
        assert len(set(idx)) == k + 1  # the query is another frame of the same scene


def test_same_seed_same_batches():
    buf = SceneBuffer(image_size=S)
    for sid in range(4):
        buf.add_batch(*frames(sid, 9))
    a = buf.sample(8, np.random.default_rng(3))
    b = buf.sample(8, np.random.default_rng(3))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_oldest_scenes_are_evicted_and_frames_capped():
    buf = SceneBuffer(image_size=S, max_scenes=3, max_frames_per_scene=5)
    for sid in range(5):
        buf.add_batch(*frames(sid, 8))
    assert buf.scene_ids() == [2, 3, 4] and len(buf) == 15
    assert buf.total_added == 40


def test_bad_frames_raise_and_change_nothing():
    buf = SceneBuffer(image_size=S)
    buf.add_batch(*frames(1, 4))
    before = len(buf)
    ids, images, vps = frames(2, 3)
    bad_vps = vps.copy()
    bad_vps[2, 3] = np.nan
    for args, match in [
        ((ids, images[:, :4], vps), "image"),
        ((ids, images.astype(np.float32), vps), "uint8"),
        ((ids, images, vps[:, :5]), "viewpoint"),
        ((ids, images, bad_vps), "finite|NaN"),
    ]:
        with pytest.raises(ValueError, match=match):
            buf.add_batch(*args)
    assert len(buf) == before and buf.num_scenes == 1
    with pytest.raises(ValueError):
        SceneBuffer(image_size=S).sample(4, np.random.default_rng(0))


def test_store_round_trip_is_exact(tmp_path):
    path = tmp_path / "f.gqnstore"
    with StoreWriter(path, image_size=S, chunk_frames=5) as writer:
        for sid in range(3):
            writer.add_batch(*frames(sid, 7))
    loaded = SceneBuffer.from_store(path, max_scenes=10)
    for sid in range(3):
        images, vps = loaded.get_scene(sid)
        _, want_images, want_vps = frames(sid, 7)
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(vps, want_vps)


def _store_with_records(path, records=3):
    store = SceneStore(path, image_size=S)
    ends = []
    for sid in range(records):
        store.append(*frames(sid, 4))
        ends.append(path.stat().st_size)
    return ends


@settings(max_examples=25, deadline=None)
@given(cut=st.floats(0.0, 0.999))
def test_a_torn_last_record_loses_only_that_record(tmp_path_factory, cut):
    path = tmp_path_factory.mktemp("crash") / "f.gqnstore"
    ends = _store_with_records(path)
    data = path.read_bytes()
    offset = ends[1] + int((ends[2] - ends[1]) * cut)  # somewhere inside the last record
    path.write_bytes(data[:offset])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreCorruptionWarning)
        buf = SceneBuffer.from_store(path)
        SceneStore(path).append(*frames(7, 4))  # appending first cuts the torn tail
    assert buf.scene_ids() == [0, 1]
    np.testing.assert_array_equal(buf.get_scene(1)[0], frames(1, 4)[1])
    # The append after the crash reads back with everything before it.
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreCorruptionWarning)
        assert SceneBuffer.from_store(path).scene_ids() == [0, 1, 7]


def test_garbage_after_the_last_record_is_dropped_with_a_warning(tmp_path):
    path = tmp_path / "f.gqnstore"
    _store_with_records(path, 2)
    with open(path, "ab") as f:
        f.write(b"GQNR\x05garbage-bytes")
    with pytest.warns(StoreCorruptionWarning):
        assert SceneBuffer.from_store(path).scene_ids() == [0, 1]


def test_not_a_store_and_size_mismatch_raise(tmp_path):
    (tmp_path / "x").write_bytes(b"hello world, not a store at all")
    with pytest.raises(ValueError, match="not a scene store"):
        SceneStore(tmp_path / "x")
    _store_with_records(tmp_path / "f", 1)
    with pytest.raises(ValueError, match="image_size"):
        SceneStore(tmp_path / "f", image_size=16)


def test_concurrent_add_and_sample_never_mix_scenes():
    buf = SceneBuffer(image_size=S, max_scenes=20)
    buf.add_batch(*frames(0, 6))
    errors = []

    def writer():
        for sid in range(1, 200):
            buf.add_batch(*frames(sid, 6))

    def reader():
        rng = np.random.default_rng(0)
        try:
            for _ in range(200):
                b = buf.sample(4, rng, num_context=3)
                for i, sid in enumerate(b["scene_ids"]):
                    assert np.all(b["context_images"][i, :, 1, 1, 0] == sid % 256)
        except Exception as err:  # noqa: BLE001 - surfaced below
            errors.append(err)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors

"""Scene stream for GQN training: an in-memory scene buffer and its on-disk store.

A *frame* is ``(scene_id, image, viewpoint)``: ``scene_id`` an int, ``image`` a
``uint8`` array ``(H, W, 3)`` with ``H == W == image_size`` and ``viewpoint`` a
``float32`` array ``(D,)`` (``D == viewpoint_dim``, 7 by default). A scene is one
episode of one env: its frames show the same 3D maze from different poses.

:class:`SceneBuffer` groups frames by scene and samples GQN batches (K context
views plus one query view of the same scene). :class:`SceneStore` persists frames
to one append-only, crash-safe file; :class:`StoreWriter` streams into a store.

Store file format (version 1; all integers little-endian)::

    file header, 24 bytes:
        magic          8s   b"GQNSTORE"
        version        u32  1
        image_size     u32  H (== W)
        viewpoint_dim  u32  D
        header_crc     u32  CRC32 of the 20 bytes above
    then zero or more records, each:
        record header, 24 bytes:
            magic        4s   b"GQNR"
            num_frames   u32  N >= 1
            payload_len  u64  length in bytes of the payload that follows
            payload_crc  u32  CRC32 (zlib.crc32) of the payload bytes
            header_crc   u32  CRC32 of the 20 record-header bytes above
        payload, payload_len bytes: one zlib stream which inflates to exactly
            N * (8 + H*W*3 + 4*D) bytes, the concatenation of
            scene_ids   int64   (N,)        "<i8"
            images      uint8   (N, H, W, 3) C order
            viewpoints  float32 (N, D)      "<f4"

No pickle is used anywhere. Readers stop at the first record that is truncated,
has a bad magic, fails its CRC or does not inflate to the expected size; the bytes
from there to the end of the file are counted in ``SceneStore.num_corrupt_bytes``
and reported with a :class:`StoreCorruptionWarning`, never an exception. A torn
write (crash mid-append) therefore loses at most the record being written. Before
its first append a store truncates such a torn tail; it refuses (``ValueError``) if
a valid record follows the damage, since cutting there would destroy good data.
One process at a time may append to a store.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import warnings
import zlib
from collections import OrderedDict
from collections.abc import Generator, Iterator
from types import TracebackType
from typing import BinaryIO

import numpy as np

from world_model.atomic import atomic_path

__all__ = ["SceneBuffer", "SceneStore", "StoreCorruptionWarning", "StoreWriter"]

FILE_MAGIC = b"GQNSTORE"
RECORD_MAGIC = b"GQNR"
FORMAT_VERSION = 1
_FILE_HEADER = struct.Struct("<8sIII")  # magic, version, image_size, viewpoint_dim
_FILE_HEADER_SIZE = _FILE_HEADER.size + 4  # + CRC32 of the above
_RECORD_HEADER = struct.Struct("<4sIQI")  # magic, num_frames, payload_len, payload_crc
_RECORD_HEADER_SIZE = _RECORD_HEADER.size + 4  # + CRC32 of the above
_INT64_MAX = np.iinfo(np.int64).max

Frames = tuple[np.ndarray, np.ndarray, np.ndarray]


class StoreCorruptionWarning(UserWarning):
    """A store had a torn or corrupt tail; the bytes after the last valid record were ignored."""


def _check_frames(scene_ids: object, images: object, viewpoints: object, image_size: int, viewpoint_dim: int) -> Frames:
    """Validate a batch of frames and return ``(int64 ids, uint8 images, float32 viewpoints)``.

    Raises:
        ValueError: naming the value received, if anything is malformed.
    """
    images = np.asarray(images)
    s = image_size
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[1:] != (s, s, 3):
        raise ValueError(f"images must have shape (N, {s}, {s}, 3), got {images.shape}")
    n = images.shape[0]
    ids = np.asarray(scene_ids)
    if ids.dtype.kind not in "iu" or ids.shape != (n,):
        raise ValueError(f"scene_ids must be {n} integers, got {ids.dtype} array of shape {ids.shape}")
    if ids.dtype.kind == "u" and n and int(ids.max()) > _INT64_MAX:
        raise ValueError(f"scene_ids must fit in int64, got {int(ids.max())}")
    vps = np.asarray(viewpoints)
    if vps.dtype.kind not in "fiu":
        raise ValueError(f"viewpoints must be real numbers, got dtype {vps.dtype}")
    if vps.shape != (n, viewpoint_dim):
        raise ValueError(f"viewpoints must have shape ({n}, {viewpoint_dim}), got {vps.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        vps32 = vps.astype(np.float32)  # values beyond float32 become inf and are rejected below
    finite = np.isfinite(vps32).all(axis=1)
    if not finite.all():
        bad = int(np.argmin(finite))
        raise ValueError(f"viewpoints must be finite in float32, got {vps[bad].tolist()} at index {bad}")
    return ids.astype(np.int64), images, vps32


def _check_frame(scene_id: object, image: object, viewpoint: object, image_size: int, viewpoint_dim: int) -> Frames:
    """Validate one frame; return it as a batch of one (see :func:`_check_frames`)."""
    if isinstance(scene_id, bool) or not isinstance(scene_id, int | np.integer):
        raise ValueError(f"scene_id must be an int, got {scene_id!r} of type {type(scene_id).__name__}")
    if not -_INT64_MAX - 1 <= int(scene_id) <= _INT64_MAX:
        raise ValueError(f"scene_id must fit in int64, got {scene_id}")
    image, viewpoint = np.asarray(image), np.asarray(viewpoint)
    if image.shape != (image_size, image_size, 3):
        raise ValueError(f"image must have shape ({image_size}, {image_size}, 3), got {image.shape}")
    if viewpoint.shape != (viewpoint_dim,):
        raise ValueError(f"viewpoint must have shape ({viewpoint_dim},), got {viewpoint.shape}")
    return _check_frames(np.array([scene_id], dtype=np.int64), image[None], viewpoint[None], image_size, viewpoint_dim)


class _Scene:
    """Frames of one scene in preallocated arrays that grow by doubling up to a cap."""

    __slots__ = ("images", "viewpoints", "size", "seen")

    def __init__(self, image_size: int, viewpoint_dim: int, capacity: int) -> None:
        self.images = np.empty((capacity, image_size, image_size, 3), dtype=np.uint8)  # (cap, H, W, 3)
        self.viewpoints = np.empty((capacity, viewpoint_dim), dtype=np.float32)  # (cap, D)
        self.size = 0  # frames stored
        self.seen = 0  # frames ever offered to this scene

    def insert(self, image: np.ndarray, viewpoint: np.ndarray, max_frames: int, rng: np.random.Generator) -> int:
        """Insert by reservoir sampling (Algorithm R); return the change in stored frames (0 or 1)."""
        self.seen += 1
        if self.size < max_frames:
            if self.size == len(self.images):
                capacity = min(2 * len(self.images), max_frames)
                self.images = np.concatenate([self.images, np.empty_like(self.images[: capacity - self.size])])
                self.viewpoints = np.concatenate(
                    [self.viewpoints, np.empty_like(self.viewpoints[: capacity - self.size])]
                )
            self.images[self.size], self.viewpoints[self.size] = image, viewpoint
            self.size += 1
            return 1
        slot = int(rng.integers(0, self.seen))  # uniform over the `seen` frames offered so far
        if slot < max_frames:
            self.images[slot], self.viewpoints[slot] = image, viewpoint
        return 0


class SceneBuffer:
    """Bounded in-memory store of frames grouped by scene, sampling GQN batches.

    Scenes are kept in order of first appearance; when a new scene would exceed
    ``max_scenes`` the oldest is evicted (an evicted id that shows up again starts a
    new scene). A scene offered more than ``max_frames_per_scene`` frames keeps a
    uniform random subset of them (reservoir sampling driven by the buffer's own
    generator seeded with ``seed``). All methods are thread-safe: one thread may add
    while another samples, and a sample never sees a half-inserted frame.

    Args:
        image_size: Image height and width H == W.
        viewpoint_dim: Viewpoint length D.
        max_scenes: Scenes kept in memory.
        max_frames_per_scene: Frames kept per scene (reservoir size).
        min_frames_to_sample: Frames a scene needs before :meth:`sample` may pick it.
        context_range: Default inclusive range of the number K of context views.
        seed: Seed of the generator used for reservoir sampling.
    """

    def __init__(
        self,
        image_size: int,
        viewpoint_dim: int = 7,
        max_scenes: int = 1000,
        max_frames_per_scene: int = 512,
        min_frames_to_sample: int = 2,
        context_range: tuple[int, int] = (1, 15),
        seed: int | None = 0,
    ) -> None:
        for name, value, low in [
            ("image_size", image_size, 1),
            ("viewpoint_dim", viewpoint_dim, 1),
            ("max_scenes", max_scenes, 1),
            ("max_frames_per_scene", max_frames_per_scene, 2),
            ("min_frames_to_sample", min_frames_to_sample, 2),
        ]:
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if min_frames_to_sample > max_frames_per_scene:
            raise ValueError(
                f"min_frames_to_sample ({min_frames_to_sample}) exceeds max_frames_per_scene ({max_frames_per_scene})"
            )
        self.image_size = image_size
        self.viewpoint_dim = viewpoint_dim
        self.max_scenes = max_scenes
        self.max_frames_per_scene = max_frames_per_scene
        self.min_frames_to_sample = min_frames_to_sample
        self.context_range = self._context_bounds(context_range)
        self._rng = np.random.default_rng(seed)
        self._scenes: OrderedDict[int, _Scene] = OrderedDict()
        self._num_frames = 0
        self._total_added = 0
        self._pixel_sum = np.zeros((image_size, image_size, 3), dtype=np.float64)  # (H, W, 3), exact for < 2**45
        self._lock = threading.Lock()

    def _context_bounds(self, num_context: int | tuple[int, int] | None) -> tuple[int, int]:
        """Resolve ``num_context`` to an inclusive range ``(lo, hi)`` with 1 <= lo <= hi."""
        if num_context is None:
            return self.context_range
        lo, hi = (num_context, num_context) if isinstance(num_context, int | np.integer) else tuple(num_context)
        if not 1 <= lo <= hi or lo + 1 > self.max_frames_per_scene:
            raise ValueError(
                f"num_context must be K or (lo, hi) with 1 <= lo <= hi and lo < max_frames_per_scene "
                f"({self.max_frames_per_scene}), got {num_context!r}"
            )
        return int(lo), int(hi)

    def add(self, scene_id: int, image: np.ndarray, viewpoint: np.ndarray) -> None:
        """Add one frame.

        Args:
            scene_id: Id of the scene (episode) the frame belongs to.
            image: ``uint8`` array ``(H, W, 3)``.
            viewpoint: Finite real array ``(D,)``, stored as ``float32``.

        Raises:
            ValueError: If the frame is malformed; the buffer is then unchanged.
        """
        self._insert(*_check_frame(scene_id, image, viewpoint, self.image_size, self.viewpoint_dim))

    def add_batch(self, scene_ids: np.ndarray, images: np.ndarray, viewpoints: np.ndarray) -> None:
        """Add N frames at once (e.g. one step of N vector envs); same result as N :meth:`add` calls.

        Args:
            scene_ids: Integer array ``(N,)``.
            images: ``uint8`` array ``(N, H, W, 3)``.
            viewpoints: Finite real array ``(N, D)``.

        Raises:
            ValueError: If any frame is malformed; nothing is inserted then.
        """
        self._insert(*_check_frames(scene_ids, images, viewpoints, self.image_size, self.viewpoint_dim))

    def _insert(self, ids: np.ndarray, images: np.ndarray, viewpoints: np.ndarray) -> None:
        with self._lock:
            for sid, image, viewpoint in zip(ids.tolist(), images, viewpoints, strict=True):
                scene = self._scenes.get(sid)
                if scene is None:
                    if len(self._scenes) >= self.max_scenes:
                        _, oldest = self._scenes.popitem(last=False)
                        self._num_frames -= oldest.size
                    scene = _Scene(self.image_size, self.viewpoint_dim, min(16, self.max_frames_per_scene))
                    self._scenes[sid] = scene
                self._num_frames += scene.insert(image, viewpoint, self.max_frames_per_scene, self._rng)
            self._pixel_sum += images.sum(axis=0, dtype=np.float64)
            self._total_added += len(ids)

    def sample(
        self, batch_size: int, rng: np.random.Generator, num_context: int | tuple[int, int] | None = None
    ) -> dict[str, np.ndarray]:
        """Sample a batch of K context views and one query view per scene.

        Scenes are drawn uniformly (with replacement) among eligible scenes: those with
        at least ``max(min_frames_to_sample, lo + 1)`` frames. K is then drawn once for
        the batch, uniformly in ``[lo, min(hi, n_min - 1)]`` where ``n_min`` is the
        smallest frame count among the drawn scenes; each item gets K + 1 distinct
        frames of its scene, the first K as context and the last as query.

        Args:
            batch_size: Number B of batch items.
            rng: The only source of randomness: same seed and same frames give the same batch.
            num_context: K, or an inclusive range ``(lo, hi)``; ``None`` uses ``context_range``.

        Returns:
            ``context_images`` (B, K, H, W, 3) uint8, ``context_viewpoints`` (B, K, D)
            float32, ``query_images`` (B, H, W, 3) uint8, ``query_viewpoints`` (B, D)
            float32 and ``scene_ids`` (B,) int64.

        Raises:
            ValueError: If no scene is eligible yet, or on a bad argument.
        """
        if not isinstance(batch_size, int | np.integer) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        lo, hi = self._context_bounds(num_context)
        needed = max(self.min_frames_to_sample, lo + 1)
        with self._lock:
            eligible = [(sid, s) for sid, s in self._scenes.items() if s.size >= needed]
            if not eligible:
                raise ValueError(
                    f"no scene has the {needed} frames needed to sample (K >= {lo}); "
                    f"the buffer holds {self._num_frames} frames in {len(self._scenes)} scenes"
                )
            chosen = [eligible[i] for i in rng.integers(0, len(eligible), size=batch_size)]
            k = int(rng.integers(lo, min(hi, min(s.size for _, s in chosen) - 1) + 1))
            s, d = self.image_size, self.viewpoint_dim
            batch = {
                "context_images": np.empty((batch_size, k, s, s, 3), dtype=np.uint8),  # (B, K, H, W, 3)
                "context_viewpoints": np.empty((batch_size, k, d), dtype=np.float32),  # (B, K, D)
                "query_images": np.empty((batch_size, s, s, 3), dtype=np.uint8),  # (B, H, W, 3)
                "query_viewpoints": np.empty((batch_size, d), dtype=np.float32),  # (B, D)
                "scene_ids": np.array([sid for sid, _ in chosen], dtype=np.int64),  # (B,)
            }
            for b, (_, scene) in enumerate(chosen):
                idx = rng.choice(scene.size, size=k + 1, replace=False)  # K context frames, then the query
                batch["context_images"][b], batch["query_images"][b] = scene.images[idx[:k]], scene.images[idx[k]]
                batch["context_viewpoints"][b] = scene.viewpoints[idx[:k]]
                batch["query_viewpoints"][b] = scene.viewpoints[idx[k]]
        return batch

    def __len__(self) -> int:
        """Number of frames currently stored."""
        with self._lock:
            return self._num_frames

    @property
    def num_scenes(self) -> int:
        """Number of scenes currently stored."""
        with self._lock:
            return len(self._scenes)

    @property
    def total_added(self) -> int:
        """Number of frames ever added, including evicted and reservoir-dropped ones."""
        with self._lock:
            return self._total_added

    def scene_ids(self) -> list[int]:
        """Ids of the stored scenes, oldest first."""
        with self._lock:
            return list(self._scenes)

    def get_scene(self, scene_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Return copies of a scene's ``images (n, H, W, 3)`` and ``viewpoints (n, D)``.

        Raises:
            KeyError: If the scene is not stored.
        """
        with self._lock:
            if scene_id not in self._scenes:
                raise KeyError(f"scene {scene_id!r} is not in the buffer")
            scene = self._scenes[scene_id]
            return scene.images[: scene.size].copy(), scene.viewpoints[: scene.size].copy()

    def mean_image(self) -> np.ndarray:
        """Mean of all frames ever added, ``float32 (H, W, 3)`` in [0, 1] (a baseline prediction).

        Raises:
            ValueError: If no frame was added yet.
        """
        with self._lock:
            if self._total_added == 0:
                raise ValueError("mean_image of an empty buffer")
            return (self._pixel_sum / (255.0 * self._total_added)).astype(np.float32)

    def save_to(self, path: str | os.PathLike[str], compression_level: int = 6) -> int:
        """Append all stored frames to the store at ``path`` (created if missing), one record per scene.

        Returns:
            The number of frames written.
        """
        store = SceneStore(path, self.image_size, self.viewpoint_dim, compression_level=compression_level)
        written = 0
        for sid in self.scene_ids():
            try:
                images, viewpoints = self.get_scene(sid)
            except KeyError:  # evicted meanwhile by another thread
                continue
            store.append(np.full(len(images), sid, dtype=np.int64), images, viewpoints)
            written += len(images)
        return written

    @classmethod
    def from_store(cls, path: str | os.PathLike[str], **kwargs: object) -> SceneBuffer:
        """Build a buffer from a store; ``kwargs`` go to the constructor (sizes default to the store's).

        Raises:
            ValueError: If ``image_size``/``viewpoint_dim`` are given and differ from the store's.
        """
        store = SceneStore(path)
        kwargs.setdefault("image_size", store.image_size)
        kwargs.setdefault("viewpoint_dim", store.viewpoint_dim)
        buffer = cls(**kwargs)  # type: ignore[arg-type]
        store.load_into(buffer)
        return buffer


class SceneStore:
    """Append-only, crash-safe file of compressed frame records (format in the module docstring).

    Args:
        path: File path, e.g. ``frames.gqnstore``.
        image_size: Required to create a missing (or empty) store; checked against an existing one.
        viewpoint_dim: Checked against an existing store; 7 when creating one and ``None``.
        compression_level: zlib level (0-9) for new records.

    Raises:
        FileNotFoundError: If the file is missing and ``image_size`` is not given.
        ValueError: If the file is not a store, or its sizes differ from those given.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        image_size: int | None = None,
        viewpoint_dim: int | None = None,
        *,
        compression_level: int = 6,
    ) -> None:
        self.path = os.fspath(path)
        if not 0 <= compression_level <= 9:
            raise ValueError(f"compression_level must be in 0..9, got {compression_level}")
        self.compression_level = compression_level
        self.num_corrupt_bytes = 0
        """Bytes after the last valid record, as found by the latest full read or first append."""
        self._append_end: int | None = None  # end of valid data, known once checked for appending
        size = os.path.getsize(self.path) if os.path.exists(self.path) else None
        if not size:
            if image_size is None:
                if size is None:
                    raise FileNotFoundError(f"no store at {self.path!r}; pass image_size to create one")
                raise ValueError(f"{self.path!r} is empty, not a store; pass image_size to create one")
            self._create(image_size, 7 if viewpoint_dim is None else viewpoint_dim)
        with open(self.path, "rb") as f:
            head = f.read(_FILE_HEADER_SIZE)
        if len(head) < _FILE_HEADER_SIZE or not head.startswith(FILE_MAGIC):
            raise ValueError(f"{self.path!r} is not a scene store (bad magic {head[:8]!r})")
        magic, version, self.image_size, self.viewpoint_dim = _FILE_HEADER.unpack_from(head)
        if struct.unpack_from("<I", head, _FILE_HEADER.size)[0] != zlib.crc32(head[: _FILE_HEADER.size]):
            raise ValueError(f"{self.path!r}: store header fails its CRC")
        if version != FORMAT_VERSION:
            raise ValueError(f"{self.path!r}: unsupported store version {version}, expected {FORMAT_VERSION}")
        for name, given, stored in [
            ("image_size", image_size, self.image_size),
            ("viewpoint_dim", viewpoint_dim, self.viewpoint_dim),
        ]:
            if given is not None and given != stored:
                raise ValueError(f"{self.path!r} holds {name}={stored}, got {name}={given}")
        self._frame_bytes = 8 + self.image_size * self.image_size * 3 + 4 * self.viewpoint_dim

    def _create(self, image_size: int, viewpoint_dim: int) -> None:
        """Write the file header atomically (temp file + rename), so it is never torn."""
        if image_size < 1 or viewpoint_dim < 1:
            raise ValueError(f"image_size and viewpoint_dim must be >= 1, got {image_size}, {viewpoint_dim}")
        head = _FILE_HEADER.pack(FILE_MAGIC, FORMAT_VERSION, image_size, viewpoint_dim)
        with atomic_path(self.path) as tmp:
            tmp.write_bytes(head + struct.pack("<I", zlib.crc32(head)))

    def _read_record(self, f: BinaryIO, offset: int, file_size: int) -> tuple[int, bytes] | str:
        """Read the record at ``offset``: ``(num_frames, payload)`` if it is whole and passes its CRC, else why not."""
        if file_size - offset < _RECORD_HEADER_SIZE:
            return "truncated record header"
        f.seek(offset)
        head = f.read(_RECORD_HEADER_SIZE)
        magic, n, length, crc = _RECORD_HEADER.unpack_from(head)
        if magic != RECORD_MAGIC or n == 0 or zlib.crc32(head[:-4]) != struct.unpack_from("<I", head, 20)[0]:
            return "bad record header"
        if length > file_size - offset - _RECORD_HEADER_SIZE:
            return "truncated record payload"
        payload = f.read(length)
        return (n, payload) if zlib.crc32(payload) == crc else "record CRC mismatch"

    def _records(self, f: BinaryIO, decode: bool) -> Generator[Frames | None, None, tuple[int, str]]:
        """Yield each valid record (decoded if ``decode``, else ``None``); return where and why reading stopped.

        A record that passes its CRC but does not inflate to its frames (a writer bug,
        not a torn write) also stops a decoding read.
        """
        file_size = os.fstat(f.fileno()).st_size
        offset = _FILE_HEADER_SIZE
        while offset < file_size:
            record = self._read_record(f, offset, file_size)
            if isinstance(record, str):
                return offset, record
            frames = self._decode(*record) if decode else None
            if decode and frames is None:
                return offset, "payload does not inflate to the declared frames"
            offset = f.tell()
            yield frames
        return offset, ""

    def _decode(self, n: int, payload: bytes) -> Frames | None:
        """Inflate and split a payload; ``None`` if it does not inflate to N frames exactly."""
        expected = n * self._frame_bytes
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(payload, expected + 1)
        except zlib.error:
            return None
        if len(raw) != expected or not inflater.eof or inflater.unused_data:
            return None
        s, d = self.image_size, self.viewpoint_dim
        ids = np.frombuffer(raw, dtype="<i8", count=n).astype(np.int64)
        images = np.frombuffer(raw, dtype=np.uint8, count=n * s * s * 3, offset=8 * n).reshape(n, s, s, 3)
        vps = np.frombuffer(raw, dtype="<f4", count=n * d, offset=8 * n + n * s * s * 3).reshape(n, d)
        return ids, images.copy(), vps.astype(np.float32)

    def _report(self, offset: int, file_size: int, reason: str) -> None:
        self.num_corrupt_bytes = file_size - offset
        if self.num_corrupt_bytes:
            warnings.warn(
                f"{self.path!r}: ignoring {self.num_corrupt_bytes} bytes after the last valid record "
                f"at offset {offset} ({reason})",
                StoreCorruptionWarning,
                stacklevel=3,
            )

    def iter_chunks(self) -> Iterator[Frames]:
        """Yield ``(scene_ids (N,) int64, images (N, H, W, 3) uint8, viewpoints (N, D) float32)`` per record.

        Stops at the first invalid record; sets :attr:`num_corrupt_bytes` and warns
        (:class:`StoreCorruptionWarning`) once the whole file has been read.
        """
        with open(self.path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            offset, reason = yield from self._records(f, decode=True)
        self._report(offset, file_size, reason)

    def load_into(self, buffer: SceneBuffer, shard: tuple[int, int] | None = None) -> int:
        """Add every stored frame to ``buffer`` in file order; return the number of frames added.

        Args:
            buffer: Where the frames go.
            shard: ``(index, count)``: keep only scenes whose id ``% count == index`` (one
                shard per distributed rank, disjoint and together complete).

        Raises:
            ValueError: If the buffer's image size or viewpoint dimension differ from the store's.
        """
        if (buffer.image_size, buffer.viewpoint_dim) != (self.image_size, self.viewpoint_dim):
            raise ValueError(
                f"{self.path!r} holds image_size={self.image_size}, viewpoint_dim={self.viewpoint_dim}; "
                f"the buffer has image_size={buffer.image_size}, viewpoint_dim={buffer.viewpoint_dim}"
            )
        if shard is not None and not (isinstance(shard[1], int) and shard[1] >= 1 and 0 <= shard[0] < shard[1]):
            raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {shard!r}")
        count = 0
        for ids, images, viewpoints in self.iter_chunks():
            if shard is not None:
                keep = ids % shard[1] == shard[0]
                ids, images, viewpoints = ids[keep], images[keep], viewpoints[keep]
                if not len(ids):
                    continue
            buffer.add_batch(ids, images, viewpoints)
            count += len(ids)
        return count

    def _valid_end(self) -> int:
        """Find the end of the valid records; truncate a torn tail (never a valid record) after it."""
        with open(self.path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            records = self._records(f, decode=False)
            while True:
                try:
                    next(records)
                except StopIteration as stop:
                    offset, reason = stop.value
                    break
            if offset < file_size:
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                    candidate = mm.find(RECORD_MAGIC, offset + 1)
                    while candidate != -1:
                        if not isinstance(self._read_record(f, candidate, file_size), str):
                            raise ValueError(
                                f"{self.path!r}: corrupt record at offset {offset} ({reason}) is followed by a "
                                f"valid record at offset {candidate}; refusing to truncate, repair by hand"
                            )
                        candidate = mm.find(RECORD_MAGIC, candidate + 1)
        self._report(offset, file_size, reason)
        if offset < file_size:
            os.truncate(self.path, offset)
            with open(self.path, "rb+") as f:
                os.fsync(f.fileno())
        return offset

    def append(self, scene_ids: np.ndarray, images: np.ndarray, viewpoints: np.ndarray) -> None:
        """Append the frames as one record: write, flush and ``os.fsync``.

        The first append of this object (or one after a failed write or a change of
        the file by someone else) first truncates a torn tail, see the module docstring.

        Args:
            scene_ids: Integer array ``(N,)``.
            images: ``uint8`` array ``(N, H, W, 3)``.
            viewpoints: Finite real array ``(N, D)``.

        Raises:
            ValueError: If a frame is malformed (nothing is written), or if the file is
                corrupt before a valid record.
        """
        ids, images, vps = _check_frames(scene_ids, images, viewpoints, self.image_size, self.viewpoint_dim)
        if len(ids) == 0:
            return
        raw = ids.astype("<i8").tobytes() + np.ascontiguousarray(images).tobytes() + vps.astype("<f4").tobytes()
        payload = zlib.compress(raw, self.compression_level)
        head = _RECORD_HEADER.pack(RECORD_MAGIC, len(ids), len(payload), zlib.crc32(payload))
        record = head + struct.pack("<I", zlib.crc32(head)) + payload
        if self._append_end is None or os.path.getsize(self.path) != self._append_end:
            self._append_end = self._valid_end()
        end, self._append_end = self._append_end, None  # unknown until the write has succeeded
        with open(self.path, "ab") as f:
            f.write(record)
            f.flush()
            os.fsync(f.fileno())
        self._append_end = end + len(record)


class StoreWriter:
    """Buffer frames and append them to a :class:`SceneStore` in records of ``chunk_frames`` frames.

    Pending frames are written on :meth:`flush`, :meth:`close` and context-manager
    exit. Not thread-safe: feed it from one thread.

    Args:
        path: Store path; created if missing.
        image_size: Image height and width H == W.
        viewpoint_dim: Viewpoint length D.
        chunk_frames: Frames per record.
        compression_level: zlib level (0-9).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        image_size: int,
        viewpoint_dim: int = 7,
        chunk_frames: int = 256,
        compression_level: int = 6,
    ) -> None:
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        self.store = SceneStore(path, image_size, viewpoint_dim, compression_level=compression_level)
        self.chunk_frames = chunk_frames
        self.frames_written = 0
        self._ids = np.empty(chunk_frames, dtype=np.int64)  # (C,)
        self._images = np.empty((chunk_frames, image_size, image_size, 3), dtype=np.uint8)  # (C, H, W, 3)
        self._viewpoints = np.empty((chunk_frames, viewpoint_dim), dtype=np.float32)  # (C, D)
        self._pending = 0
        self._closed = False

    def add(self, scene_id: int, image: np.ndarray, viewpoint: np.ndarray) -> None:
        """Queue one frame (validated now; see :meth:`SceneBuffer.add`)."""
        self._queue(*_check_frame(scene_id, image, viewpoint, self.store.image_size, self.store.viewpoint_dim))

    def add_batch(self, scene_ids: np.ndarray, images: np.ndarray, viewpoints: np.ndarray) -> None:
        """Queue N frames (validated now; see :meth:`SceneBuffer.add_batch`)."""
        self._queue(*_check_frames(scene_ids, images, viewpoints, self.store.image_size, self.store.viewpoint_dim))

    def _queue(self, ids: np.ndarray, images: np.ndarray, viewpoints: np.ndarray) -> None:
        if self._closed:
            raise ValueError("StoreWriter is closed")
        start = 0
        while start < len(ids):
            take = min(self.chunk_frames - self._pending, len(ids) - start)
            dst, src = slice(self._pending, self._pending + take), slice(start, start + take)
            self._ids[dst], self._images[dst], self._viewpoints[dst] = ids[src], images[src], viewpoints[src]
            self._pending += take
            start += take
            if self._pending == self.chunk_frames:
                self.flush()

    def flush(self) -> None:
        """Append the pending frames, if any, as one record."""
        if self._pending:
            n = self._pending
            self.store.append(self._ids[:n], self._images[:n], self._viewpoints[:n])
            self._pending = 0
            self.frames_written += n

    def close(self) -> None:
        """Flush and refuse further frames."""
        if not self._closed:
            self.flush()
            self._closed = True

    def __enter__(self) -> StoreWriter:
        """Return self."""
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Flush and close, also when leaving on an exception."""
        self.close()

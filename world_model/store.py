"""On-disk scene stream: an append-only, crash-safe file of compressed frames.

:class:`SceneStore` persists frames (see :mod:`world_model.frames` for what a frame
is) to one file and loads them back into a :class:`~world_model.data.SceneBuffer`;
:class:`StoreWriter` streams frames into a store in records.

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
import signal
import struct
import threading
import warnings
import zlib
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import BinaryIO

import numpy as np

from world_model.atomic import atomic_path
from world_model.frames import Frames, FrameSink, check_frame, check_frames

__all__ = ["SceneStore", "StoreCorruptionWarning", "StoreWriter"]

FILE_MAGIC = b"GQNSTORE"
RECORD_MAGIC = b"GQNR"
FORMAT_VERSION = 1
_FILE_HEADER = struct.Struct("<8sIII")  # magic, version, image_size, viewpoint_dim
_FILE_HEADER_SIZE = _FILE_HEADER.size + 4  # + CRC32 of the above
_RECORD_HEADER = struct.Struct("<4sIQI")  # magic, num_frames, payload_len, payload_crc
_RECORD_HEADER_SIZE = _RECORD_HEADER.size + 4  # + CRC32 of the above


class StoreCorruptionWarning(UserWarning):
    """A store had a torn or corrupt tail; the bytes after the last valid record were ignored."""


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

    def load_into(self, buffer: FrameSink, shard: tuple[int, int] | None = None) -> int:
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
        ids, images, vps = check_frames(scene_ids, images, viewpoints, self.image_size, self.viewpoint_dim)
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


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver them to their usual handlers.

    Python runs signal handlers in the main thread only, so the hold is taken there by
    swapping the handlers (a thread's signal mask would not do: the process's other
    threads still receive the signal). Elsewhere, and for handlers set outside Python,
    signals are not held.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not None:
            held[signum] = signal.signal(signum, lambda number, _frame: caught.append(number))
    try:
        yield
    finally:
        for signum, handler in held.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)


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
        self._queue(*check_frame(scene_id, image, viewpoint, self.store.image_size, self.store.viewpoint_dim))

    def add_batch(self, scene_ids: np.ndarray, images: np.ndarray, viewpoints: np.ndarray) -> None:
        """Queue N frames (validated now; see :meth:`SceneBuffer.add_batch`)."""
        self._queue(*check_frames(scene_ids, images, viewpoints, self.store.image_size, self.store.viewpoint_dim))

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
        """Append the pending frames, if any, as one record.

        Ctrl-C (SIGINT) and SIGTERM are held until the record is written and counted, so
        an interrupted collector neither tears a record nor writes one twice on exit.
        """
        if self._pending:
            with _signals_deferred():
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

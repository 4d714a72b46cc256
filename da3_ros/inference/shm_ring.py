"""Shared-memory slots for handing arrays between two processes without pickling them.

A :class:`SlotRing` has one producer and one consumer (two processes, or two threads in tests).
Each slot is a file of its own in ``/dev/shm`` (memory, never disk), grown by the producer when a
message does not fit; a one-byte flag per slot, in a small shared file, says whether the slot is
``FREE`` or ``BUSY``. The producer takes the next slot in turn (:meth:`SlotRing.acquire`; None
when that slot is still busy: the consumer is behind), writes the arrays into it
(:meth:`SlotRing.write`) and sends the returned :class:`SlotLayout` through any pipe; the
consumer maps the slot (:meth:`SlotRing.arrays`, views, no copy; :meth:`SlotRing.messages` for
the serialised messages written as :class:`~da3_ros.core.wire.Framed`) and sets the flag back
(:meth:`SlotRing.release`) once it no longer reads them. Only the layout (a few hundred bytes)
crosses the pipe: a window's depth, confidence and colour maps (30 MB at 8 views of 640 x 480)
are written once, by the producer, and read in place.

File names carry the creating process's id, ``da3_ros.<pid>.<ring>.<slot>.<generation>``, and
:func:`sweep_stale` removes those of processes that no longer run (a process killed before it
could unlink its files), so a crash leaks nothing past the next start.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from dataclasses import dataclass

import numpy as np

from da3_ros.core.wire import Framed

#: Where slot files live: a memory file system on Linux (ROS 2's platform); a temporary
#: directory elsewhere.
SHM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else os.environ.get("TMPDIR", "/tmp")
FREE, BUSY = 0, 1
#: What to do when ``/dev/shm`` is too small (Docker gives a container 64 MB unless told).
SHM_HINT = ("Give /dev/shm more room: about 150 MB for one 640x480 camera at num_view 8 (docker run "
            "--shm-size=1g; docker compose shm_size), or set inference_process off")
#: Byte alignment of each array inside a slot (cache lines; numpy and torch like 64).
ALIGN = 64


@dataclass(frozen=True)
class SlotLayout:
    """Where one message's arrays lie in shared memory.

    ``arrays`` holds ``(key, offset, shape, dtype, head, tail)`` for each: a framed array's prefix
    takes the ``head`` bytes before ``offset`` and its suffix the ``tail`` bytes after the array
    (both 0 for a plain array).
    """

    slot: int
    path: str
    arrays: tuple[tuple[str, int, tuple[int, ...], str, int, int], ...]


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _map_file(path: str, size: int, create: bool) -> mmap.mmap:
    """Map ``path``; ``create``: a new file of ``size`` bytes, its memory reserved now.

    Raises:
        OSError: ``ENOSPC`` when the memory file system cannot hold ``size`` more bytes (a
            container's 64 MB ``/dev/shm``): reserving up front turns what would be a SIGBUS
            at the first write into an error the caller handles (the file is removed).
    """
    flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
    fd = os.open(path, flags, 0o600)
    try:
        if create:
            try:
                os.ftruncate(fd, size)
                os.posix_fallocate(fd, 0, size)
            except OSError:
                _unlink(path)
                raise
        else:
            size = os.fstat(fd).st_size
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


class SlotRing:
    """``slots`` shared slots used in turn by one producer and one consumer (see module docstring).

    Create it in the producer or the consumer (``create=True``: makes the flag file), and open it
    in the other process with :meth:`attach` and the same ``name``. Whoever created it unlinks
    every file of the ring in :meth:`close`; files made by the producer in another process are
    found by their name prefix.

    Args:
        name: the ring's name; unique per pair of processes (``da3_ros.<pid>.<what>``).
        slots: number of slots (messages in flight at most).
        create: make the flag file (all slots free).
    """

    def __init__(self, name: str, slots: int, create: bool = True) -> None:
        if slots < 1:
            raise ValueError(f"a ring needs at least one slot, got {slots}")
        self.name, self.slots, self.owner = name, int(slots), create
        self._flags_path = os.path.join(SHM_DIR, f"{name}.flags")
        self._flags_map = _map_file(self._flags_path, self.slots, create)
        self.flags = np.frombuffer(self._flags_map, dtype=np.uint8, count=self.slots)
        self._next = 0
        self._own: dict[int, tuple[str, mmap.mmap]] = {}  # producer: slot -> (path, map)
        self._seen: dict[int, tuple[str, mmap.mmap]] = {}  # consumer: slot -> (path, map)
        self._generation = 0

    @classmethod
    def attach(cls, name: str, slots: int) -> SlotRing:
        """Open a ring another process created."""
        return cls(name, slots, create=False)

    # -- producer -------------------------------------------------------------------------
    def acquire(self) -> int | None:
        """The next slot in turn, marked busy; None while the consumer still holds it."""
        slot = self._next
        if self.flags[slot] != FREE:
            return None
        self.flags[slot] = BUSY
        self._next = (slot + 1) % self.slots
        return slot

    def write(self, slot: int, arrays: dict[str, np.ndarray | Framed]) -> SlotLayout:
        """Copy ``arrays`` into ``slot`` (acquired), growing its file when needed; their layout.

        A :class:`~da3_ros.core.wire.Framed` value is written as the whole serialised message
        (prefix, array, suffix back to back): the consumer reads its array with :meth:`arrays`
        and the message with :meth:`messages`, both in place. A structured array (a packed
        cloud) is read back as its bytes (uint8, 1-D).

        Raises:
            OSError: no room for the slot in :data:`SHM_DIR` (see :func:`_map_file`); the
                slot stays acquired (release it).
        """
        entries, parts, offset = [], [], 0
        for key, value in arrays.items():
            framed = isinstance(value, Framed)
            head, arr, tail = ((value.prefix, np.asarray(value.array), value.suffix) if framed
                               else (b"", np.asarray(value), b""))
            if arr.dtype.names:  # a structured array (a packed cloud) travels as its bytes
                arr = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
            at = offset + len(head)  # a prefix is a multiple of 4 bytes: the array stays aligned to 4
            entries.append((key, at, tuple(int(n) for n in arr.shape), arr.dtype.str, len(head), len(tail)))
            parts.append((head, arr, tail))
            offset = _align(at + arr.nbytes + len(tail))
        path, buf = self._slot_file(slot, max(offset, ALIGN))
        for (_key, at, shape, dtype, n_head, n_tail), (head, arr, tail) in zip(entries, parts):
            buf[at - n_head:at] = head
            dst = np.ndarray(shape, dtype=np.dtype(dtype), buffer=buf, offset=at)
            np.copyto(dst, arr, casting="no")
            end = at + dst.nbytes
            buf[end:end + n_tail] = tail
        return SlotLayout(slot, path, tuple(entries))

    def _slot_file(self, slot: int, size: int) -> tuple[str, mmap.mmap]:
        held = self._own.get(slot)
        if held is not None and len(held[1]) >= size:
            return held
        if held is not None:  # too small: a new file (the consumer maps it by its new name)
            _unlink(held[0])
            del self._own[slot]
        self._generation += 1
        path = os.path.join(SHM_DIR, f"{self.name}.{slot}.{self._generation}")
        held = (path, _map_file(path, size + size // 4, create=True))  # room to grow a little
        self._own[slot] = held
        return held

    # -- consumer -------------------------------------------------------------------------
    def arrays(self, layout: SlotLayout) -> dict[str, np.ndarray]:
        """Views of a message's arrays in shared memory (valid until :meth:`release`)."""
        buf = self._mapped(layout)
        return {key: np.ndarray(shape, dtype=np.dtype(dtype), buffer=buf, offset=at)
                for key, at, shape, dtype, _head, _tail in layout.arrays}

    def messages(self, layout: SlotLayout) -> dict[str, np.ndarray]:
        """The framed entries as whole serialised messages: uint8 views (valid until :meth:`release`)."""
        buf = self._mapped(layout)
        out = {}
        for key, at, shape, dtype, head, tail in layout.arrays:
            if head or tail:
                size = head + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize + tail
                out[key] = np.ndarray((size,), dtype=np.uint8, buffer=buf, offset=at - head)
        return out

    def _mapped(self, layout: SlotLayout) -> mmap.mmap:
        seen = self._seen.get(layout.slot)
        if seen is None or seen[0] != layout.path:
            seen = (layout.path, _map_file(layout.path, 0, create=False))
            self._seen[layout.slot] = seen  # an older map closes when its last view goes
        return seen[1]

    def release(self, slot: int) -> None:
        """The consumer is done with ``slot``: the producer may write it again (no-op once closed)."""
        if self.flags is not None:
            self.flags[slot] = FREE

    def busy(self) -> int:
        """Slots written and not yet released."""
        return int(np.count_nonzero(self.flags))

    # -- both ---------------------------------------------------------------------------
    def close(self) -> None:
        """Unmap; the creator also unlinks every file of the ring (any process's)."""
        self._own.clear()
        self._seen.clear()
        self.flags = None
        self._flags_map = None  # closes when no view is left
        if self.owner:
            prefix = os.path.basename(self.name) + "."
            for entry in os.listdir(SHM_DIR):
                if entry.startswith(prefix):
                    _unlink(os.path.join(SHM_DIR, entry))


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def ring_name(what: str, pid: int | None = None) -> str:
    """A ring name of this process: ``da3_ros.<pid>.<what>`` (see :func:`sweep_stale`)."""
    return f"da3_ros.{os.getpid() if pid is None else pid}.{what}"


def sweep_stale() -> int:
    """Unlink slot files of processes that no longer run; returns how many were removed."""
    removed = 0
    for entry in os.listdir(SHM_DIR):
        parts = entry.split(".")
        if len(parts) < 3 or parts[0] != "da3_ros" or not parts[1].isdigit():
            continue
        if not _alive(int(parts[1])):
            _unlink(os.path.join(SHM_DIR, entry))
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

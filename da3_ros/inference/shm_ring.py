"""Shared-memory slots for handing arrays between two processes without pickling them.

A :class:`SlotRing` has one producer and one consumer (two processes, or two threads in tests).
Each slot is a file of its own in ``/dev/shm`` (memory, never disk), grown by the producer when a
message does not fit; a one-byte flag per slot, in a small shared file, says whether the slot is
``FREE`` or ``BUSY``. The producer takes the next slot in turn (:meth:`SlotRing.acquire`; None
when that slot is still busy: the consumer is behind), writes the arrays into it
(:meth:`SlotRing.write`) and sends the returned :class:`SlotLayout` through any pipe; the
consumer maps the slot (:meth:`SlotRing.arrays`, views, no copy) and sets the flag back
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
    """Where one message's arrays lie: slot index, the slot's file, ``(key, offset, shape, dtype)`` each."""

    slot: int
    path: str
    arrays: tuple[tuple[str, int, tuple[int, ...], str], ...]


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

    def write(self, slot: int, arrays: dict[str, np.ndarray]) -> SlotLayout:
        """Copy ``arrays`` into ``slot`` (acquired), growing its file when needed; their layout.

        Raises:
            OSError: no room for the slot in :data:`SHM_DIR` (see :func:`_map_file`); the
                slot stays acquired (release it).
        """
        entries, offset = [], 0
        for key, arr in arrays.items():
            arr = np.asarray(arr)
            entries.append((key, offset, tuple(int(n) for n in arr.shape), arr.dtype.str))
            offset = _align(offset + arr.nbytes)
        path, buf = self._slot_file(slot, max(offset, ALIGN))
        for (_key, off, shape, dtype), arr in zip(entries, arrays.values()):
            dst = np.ndarray(shape, dtype=np.dtype(dtype), buffer=buf, offset=off)
            np.copyto(dst, arr, casting="no")
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
        seen = self._seen.get(layout.slot)
        if seen is None or seen[0] != layout.path:
            seen = (layout.path, _map_file(layout.path, 0, create=False))
            self._seen[layout.slot] = seen  # an older map closes when its last view goes
        buf = seen[1]
        return {key: np.ndarray(shape, dtype=np.dtype(dtype), buffer=buf, offset=off)
                for key, off, shape, dtype in layout.arrays}

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

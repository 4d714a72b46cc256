"""Bags for the tool tests: damaged copies, bags without ground truth, tool runs as a user types them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from da3_ros.dds_env import loopback_env
from da3_ros.tools.bag.io import BagReader, BagWriter

BIN = Path(sys.executable).parent
DATA = Path(__file__).resolve().parent / "data"


def damage_middle_chunk(src: Path, dst: Path, n_bytes: int = 4096, where: str = "middle") -> Path:
    """A copy of mcap bag ``src`` (directory or file) whose middle chunk has ``n_bytes`` overwritten.

    As a bad disk sector would: the bag's index and summary stay intact, so it still opens.
    ``where="middle"``: in the middle of the chunk (with zstd data ``rosbags`` may then read the
    chunk short without an error); ``"start"``: where the chunk's data begins (every reader fails
    there). Returns the mcap file.
    """
    from mcap.reader import make_reader

    if src.is_dir():
        shutil.copytree(src, dst)
        mcap = next(dst.glob("*.mcap"))
    else:
        shutil.copy(src, dst)
        mcap = dst
    with open(mcap, "rb") as f:
        chunks = make_reader(f).get_summary().chunk_indexes
    assert len(chunks) >= 3, f"{src} has {len(chunks)} chunks; a middle one needs at least 3"
    mid = chunks[len(chunks) // 2]
    data = bytearray(mcap.read_bytes())
    # opcode, length, start / end time, uncompressed size and CRC, compression string, data length
    data_start = mid.chunk_start_offset + 1 + 8 + 8 + 8 + 8 + 4 + 4 + len(mid.compression) + 8
    at = data_start if where == "start" else mid.chunk_start_offset + mid.chunk_length // 2
    data[at:at + n_bytes] = bytes((i * 37 + 11) % 256 for i in range(n_bytes))
    mcap.write_bytes(bytes(data))
    return mcap


def copy_topics(src: Path, dst: Path, keep) -> Path:
    """A new mcap bag with the messages of ``src`` whose topic passes ``keep(topic)``."""
    with BagReader(src) as r, BagWriter(dst) as w:
        for topic, stamp, raw in r.messages():
            if keep(topic):
                w.write(topic, stamp, raw, r.msgtype(topic))
    return dst


def run_tool(tool: str, *args, cwd: Path, domain: int = 77, timeout: float = 180):
    """Run a console script as a user would; returns (CompletedProcess, wall seconds)."""
    env = loopback_env(domain, log_dir=str(cwd / "ros_logs"))
    t0 = time.monotonic()
    res = subprocess.run([str(BIN / tool), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env,
                         timeout=timeout)
    return res, time.monotonic() - t0


def chunk_compression(bag: Path) -> set[str]:
    """The compression of the chunks of an mcap bag's first file ('' = none)."""
    from mcap.reader import make_reader

    with open(next(bag.glob("*.mcap")), "rb") as f:
        return {c.compression for c in make_reader(f).get_summary().chunk_indexes}

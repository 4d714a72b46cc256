"""Read a whole bag once before it is used, so a damaged file fails in seconds instead of mid-run.

:func:`check_bag` goes through every storage file of a bag at disk speed, decoding no message:

- mcap: every record with ``mcap``'s stream reader; each chunk is decompressed and its CRC checked
  where the writer stored one (``ros2 bag record`` does; ``rosbags`` writes none, then a damaged
  chunk is still found when it no longer decompresses or parses), and the data-section CRC;
- sqlite3: ``PRAGMA quick_check`` (page structure) and the rows of every topic;

then compares the messages found per topic with the bag's own counts (metadata.yaml or the mcap
summary): a truncated or damaged file, or metadata that promises messages the file does not hold,
raises :class:`~da3_ros.tools.bag.io.BagError` naming the file and what is wrong. On the way it
keeps the header stamps of the topics asked for (their first 12 bytes: a rig's synchronisation is
judged from them without decoding a single image).
"""

from __future__ import annotations

import sqlite3
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from da3_ros.tools.bag.io import BagError, BagReader
from da3_ros.tools.cli import one_line
from da3_ros.tools.outdir import human_bytes


@dataclass
class BagCheck:
    """What :func:`check_bag` read.

    Attributes:
        counts: messages found per topic.
        files, bytes: storage files read and their size.
        chunks: mcap chunks read; crc_chunks: those whose CRC was checked (stored by the writer).
        seconds: time taken.
        stamps: header stamps (ns) per requested topic, in file order.
    """

    counts: dict[str, int] = field(default_factory=dict)
    files: int = 0
    bytes: int = 0
    chunks: int = 0
    crc_chunks: int = 0
    seconds: float = 0.0
    stamps: dict[str, list[int]] = field(default_factory=dict)

    def line(self) -> str:
        """One line for the terminal."""
        crc = (f", {self.crc_chunks}/{self.chunks} chunk CRCs checked" if self.chunks else "")
        return (f"{sum(self.counts.values())} messages on {len(self.counts)} topics, "
                f"{human_bytes(self.bytes)} in {self.files} file(s){crc}, {self.seconds:.1f} s")


def header_stamp(raw: bytes | memoryview) -> int | None:
    """Header stamp (ns) of CDR bytes whose message starts with std_msgs/Header; None if too short."""
    if len(raw) < 12:
        return None
    sec, nsec = struct.unpack_from("<iI" if raw[1] == 1 else ">iI", raw, 4)
    return sec * 1_000_000_000 + nsec


def storage_files(path: Path) -> list[Path]:
    """The mcap / db3 files of a bag directory, or the bag file itself."""
    if path.is_file():
        return [path]
    return sorted([*path.glob("*.mcap"), *path.glob("*.db3")])


def _check_mcap(path: Path, result: BagCheck, stamp_topics: set[str], start_ns: int) -> None:
    from mcap.records import Channel, Chunk, Message
    from mcap.stream_reader import StreamReader, breakup_chunk

    topics: dict[int, str] = {}

    def take(records) -> None:
        for rec in records:
            if isinstance(rec, Channel):
                topics[rec.id] = rec.topic
            elif isinstance(rec, Message):
                topic = topics.get(rec.channel_id, f"<channel {rec.channel_id}>")
                result.counts[topic] = result.counts.get(topic, 0) + 1
                if topic in stamp_topics:
                    stamp = header_stamp(rec.data)
                    if stamp is not None:
                        result.stamps.setdefault(topic, []).append(stamp)

    with open(path, "rb") as f:
        for rec in StreamReader(f, emit_chunks=True, validate_crcs=True).records:
            if isinstance(rec, Chunk):
                result.chunks += 1
                result.crc_chunks += rec.uncompressed_crc != 0
                try:
                    take(breakup_chunk(rec, validate_crc=True))
                except Exception as exc:  # noqa: BLE001 - any failure inside a chunk is damage
                    span = (f"{(rec.message_start_time - start_ns) * 1e-9:.1f}-"
                                    f"{(rec.message_end_time - start_ns) * 1e-9:.1f} s into the bag")
                    raise BagError(f"bag file {path} is damaged: chunk {result.chunks} (messages {span}) "
                                   f"cannot be read: {one_line(exc)}") from exc
            else:
                take([rec])


def _check_sqlite(path: Path, result: BagCheck, stamp_topics: set[str], start_ns: int) -> None:  # noqa: ARG001
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        verdict = db.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            raise BagError(f"bag file {path} is damaged: sqlite quick_check says {verdict}")
        names = dict(db.execute("SELECT id, name FROM topics"))
        for topic_id, n in db.execute("SELECT topic_id, COUNT(*) FROM messages GROUP BY topic_id"):
            topic = names.get(topic_id, f"<topic {topic_id}>")
            result.counts[topic] = result.counts.get(topic, 0) + n
        for topic_id, name in names.items():
            if name in stamp_topics:
                rows = db.execute("SELECT substr(data, 1, 12) FROM messages WHERE topic_id = ? ORDER BY "
                                  "timestamp", (topic_id,))
                result.stamps[name] = [s for (head,) in rows if (s := header_stamp(head)) is not None]
    finally:
        db.close()


def check_bag(reader: BagReader, stamp_topics: tuple[str, ...] | list[str] = ()) -> BagCheck:
    """Read every storage file of ``reader``'s bag and check it against the bag's counts.

    Args:
        reader: the open bag (its topic counts are what the files must hold).
        stamp_topics: topics whose header stamps to collect.

    Raises:
        BagError: a file is damaged or truncated, or holds other message counts than the bag says.
    """
    t0 = time.perf_counter()
    result = BagCheck()
    wanted = set(stamp_topics)
    for path in storage_files(reader.path):
        result.files += 1
        result.bytes += path.stat().st_size
        check = _check_mcap if path.suffix == ".mcap" else _check_sqlite
        try:
            check(path, result, wanted, reader.start_ns)
        except BagError:
            raise
        except Exception as exc:  # noqa: BLE001 - truncated files, bad records, unreadable databases
            raise BagError(f"bag file {path} is damaged or truncated: {one_line(exc)}") from exc
    if result.files:  # a file-compressed bag (.mcap.zstd) is checked by rosbags when it opens
        wrong = [f"{t}: {n} listed, {result.counts.get(t, 0)} readable" for t, (_, n) in reader.topics.items()
                 if result.counts.get(t, 0) != n]
        if wrong:
            more = "; ..." if len(wrong) > 3 else ""
            raise BagError(f"bag {reader.path} is damaged or truncated: it holds other messages than its "
                           f"index lists ({'; '.join(wrong[:3])}{more})")
    result.seconds = time.perf_counter() - t0
    return result

"""rosbag2 reading and writing with ``rosbags`` (mcap and sqlite3), no ROS install needed.

- :class:`BagReader` opens a bag directory or a bare ``.mcap`` / ``.db3`` file, lists its
  topics, finds topics by name or message type and yields raw CDR messages.
- :func:`find_cameras` groups a bag's image topics into cameras with their
  ``camera_info`` and ground-truth (``depth_gt``, ``pose_gt``) companions.
- :class:`BagWriter` writes raw CDR bytes (e.g. from ``rclpy.serialization``) or
  ``rosbags`` messages to a new bag.

Every problem with a bag (missing, corrupt, truncated, lacking a topic) raises
:class:`BagError` with a one-line message; command-line tools print it and exit non-zero.

Camera naming (``da3-synth`` and the tools): the camera of image topic
``/<ns>/image_raw`` (or ``.../image_raw/compressed``) is ``<ns>`` with ``/`` replaced by ``_``;
an image topic without a namespace belongs to camera ``camera``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from da3_ros.tools.cli import ToolError, one_line

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
#: Message types whose size grows with the image (decimated by ``BagWriter(heavy_every=N)``).
HEAVY_TYPES = (*IMAGE_TYPES, "sensor_msgs/msg/PointCloud2")
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
POSE_TYPE = "geometry_msgs/msg/PoseStamped"
# Image topics that carry depth / confidence rather than camera pictures.
_NON_CAMERA_WORDS = ("depth", "confidence", "disparity", "mask", "conf")


class BagError(ToolError):
    """A bag cannot be read or written as asked; the message is one line, for the user."""


@functools.lru_cache(maxsize=1)
def typestore():
    """The ROS 2 Kilted ``rosbags`` typestore (message classes and CDR (de)serialisation)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


@dataclass(frozen=True)
class CameraTopics:
    """The topics of one camera in a bag (empty string: not present)."""

    name: str
    image: str
    image_type: str
    camera_info: str = ""
    depth_gt: str = ""
    pose_gt: str = ""


class BagReader:
    """Read-only access to one rosbag2 (directory with metadata.yaml, or a bare mcap / db3 file).

    Args:
        path: the bag.

    Raises:
        BagError: the bag does not exist or cannot be opened (corrupt, truncated, unknown format).
    """

    def __init__(self, path: str | Path):
        from rosbags.rosbag2 import Reader

        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag not found: {self.path}")
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as exc:  # noqa: BLE001 - any failure to open is reported as one line
            raise BagError(f"cannot open bag {self.path} (corrupt, truncated or not a rosbag2?): "
                           f"{one_line(exc)}") from exc
        self._by_topic = {}
        for conn in self._reader.connections:
            self._by_topic.setdefault(conn.topic, []).append(conn)

    def close(self) -> None:
        """Close the underlying storage."""
        if self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def topics(self) -> dict[str, tuple[str, int]]:
        """``{topic: (message type, message count)}``."""
        return {t: (c[0].msgtype, sum(x.msgcount for x in c)) for t, c in self._by_topic.items()}

    @property
    def start_ns(self) -> int:
        """Earliest log time in the bag, nanoseconds."""
        return int(self._reader.start_time)

    @property
    def end_ns(self) -> int:
        """Latest log time in the bag, nanoseconds."""
        return int(self._reader.end_time)

    def msgtype(self, topic: str) -> str:
        """Message type of ``topic``; :class:`BagError` if the bag has no such topic."""
        if topic not in self._by_topic:
            have = ", ".join(sorted(self._by_topic)) or "none"
            raise BagError(f"topic {topic} not in bag {self.path} (topics: {have})")
        return self._by_topic[topic][0].msgtype

    def topics_of_type(self, *msgtypes: str) -> list[str]:
        """Sorted topics whose message type is one of ``msgtypes``."""
        return sorted(t for t, (mt, _) in self.topics.items() if mt in msgtypes)

    def messages(self, topics: Iterable[str] = ()) -> Iterator[tuple[str, int, bytes]]:
        """Yield ``(topic, log_time_ns, raw CDR bytes)`` in log-time order.

        Args:
            topics: topics to read (all when empty); each must exist.

        Raises:
            BagError: a topic is missing, or the storage is corrupt / truncated.
        """
        conns = [c for t in topics for c in (self.msgtype(t) and self._by_topic[t])]
        try:
            for conn, stamp, raw in self._reader.messages(connections=conns):
                yield conn.topic, int(stamp), bytes(raw)
        except BagError:
            raise
        except Exception as exc:  # noqa: BLE001 - corrupt data mid-file
            raise BagError(f"bag {self.path} is corrupt or truncated: {one_line(exc)}") from exc

    def decode(self, raw: bytes, msgtype: str):
        """Deserialise CDR bytes into a ``rosbags`` message object (duck-types as the ROS one)."""
        try:
            return typestore().deserialize_cdr(raw, msgtype)
        except Exception as exc:  # noqa: BLE001
            raise BagError(f"cannot decode a {msgtype} message in {self.path}: {one_line(exc)}") from exc


def camera_name(image_topic: str) -> str:
    """Camera name of an image topic: its namespace with '/' -> '_' ('camera' when none)."""
    parts = [p for p in image_topic.strip("/").split("/") if p]
    if parts and parts[-1] == "compressed":
        parts = parts[:-1]
    ns = parts[:-1]
    return "_".join(ns) if ns else "camera"


def _namespace(image_topic: str) -> str:
    parts = image_topic.rstrip("/").split("/")
    if parts[-1] == "compressed":
        parts = parts[:-1]
    return "/".join(parts[:-1])


def find_cameras(reader: BagReader, image_topics: Iterable[str] = ()) -> list[CameraTopics]:
    """The cameras of a bag, from the given image topics or every camera-like image topic.

    Companion topics are looked up next to the image topic: ``<ns>/camera_info``
    (CameraInfo), ``<ns>/depth_gt`` (Image) and ``<ns>/pose_gt`` (PoseStamped).

    Raises:
        BagError: a named topic is missing or not an image, or the bag has no image topic.
    """
    chosen = list(image_topics)
    if chosen:
        for t in chosen:
            if reader.msgtype(t) not in IMAGE_TYPES:
                raise BagError(f"topic {t} is a {reader.msgtype(t)}, not an image")
    else:
        chosen = [t for t in reader.topics_of_type(*IMAGE_TYPES)
                  if not any(w in t.rstrip("/").split("/")[-1].lower() for w in _NON_CAMERA_WORDS)
                  and reader.topics[t][1] > 0]
    if not chosen:
        raise BagError(f"bag {reader.path} has no image topics (topics: "
                       f"{', '.join(sorted(reader.topics)) or 'none'})")
    cams = []
    for t in chosen:
        ns = _namespace(t)

        def companion(suffix: str, msgtype: str, ns: str = ns) -> str:
            topic = f"{ns}/{suffix}"
            return topic if reader.topics.get(topic, ("", 0))[0] == msgtype else ""

        cams.append(CameraTopics(name=camera_name(t), image=t, image_type=reader.msgtype(t),
                                 camera_info=companion("camera_info", CAMERA_INFO_TYPE),
                                 depth_gt=companion("depth_gt", "sensor_msgs/msg/Image"),
                                 pose_gt=companion("pose_gt", POSE_TYPE)))
    names = [c.name for c in cams]
    if len(set(names)) != len(names):
        raise BagError(f"image topics {chosen} give duplicate camera names {names}; pick topics explicitly")
    return cams


class BagWriter:
    """Write a new rosbag2 (rosbag2 format version 9).

    Args:
        path: bag directory to create (must not exist unless ``overwrite``).
        fmt: ``"mcap"`` or ``"sqlite3"``.
        compress: zstd chunk compression (mcap only; readable by ros2 bag and mcap tools).
        overwrite: remove an existing bag directory at ``path`` first.
        heavy_every: keep only every N-th message of each topic of a :data:`HEAVY_TYPES` type (images,
            clouds; the first one always); other topics (poses, camera_info, ...) are all written.
            ``counts`` / ``skipped``: messages written / left out, per topic.
    """

    def __init__(self, path: str | Path, fmt: str = "mcap", compress: bool = False, overwrite: bool = False,
                 heavy_every: int = 1):
        import shutil

        from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

        self.path = Path(path)
        plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
        if fmt not in plugins:
            raise BagError(f"unknown bag format {fmt!r}; expected mcap or sqlite3")
        if self.path.exists():
            if not overwrite:
                raise BagError(f"output bag {self.path} exists; remove it or choose another path")
            if not (self.path / "metadata.yaml").exists():
                raise BagError(f"refusing to overwrite {self.path}: not a rosbag2 directory")
            shutil.rmtree(self.path)
        self._writer = Writer(self.path, version=9, storage_plugin=plugins[fmt])
        if compress and fmt == "mcap":
            self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        try:
            self._writer.open()
        except Exception as exc:  # noqa: BLE001
            raise BagError(f"cannot create bag {self.path}: {one_line(exc)}") from exc
        self._conns = {}
        self.counts: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        self.heavy_every = max(1, int(heavy_every))
        self._offered: dict[str, int] = {}

    def set_metadata(self, key: str, value: str) -> None:
        """Store a ``custom_data`` entry in metadata.yaml (call before the first write)."""
        self._writer.set_custom_data(key, value)

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Register ``topic`` with ``msgtype`` (a type of the Kilted typestore)."""
        if topic not in self._conns:
            self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=typestore())
            self.counts[topic] = self.skipped[topic] = self._offered[topic] = 0

    def write(self, topic: str, log_time_ns: int, data, msgtype: str | None = None) -> None:
        """Write one message: raw CDR ``bytes`` or a ``rosbags`` message object.

        The topic is registered on first use (``msgtype`` taken from the message object
        when not given). A heavy message that ``heavy_every`` leaves out is only counted.
        """
        if topic not in self._conns:
            self.add_topic(topic, msgtype or data.__msgtype__)
        n = self._offered[topic]
        self._offered[topic] = n + 1
        if n % self.heavy_every and self._conns[topic].msgtype in HEAVY_TYPES:
            self.skipped[topic] += 1
            return
        if not isinstance(data, bytes | bytearray | memoryview):
            data = typestore().serialize_cdr(data, self._conns[topic].msgtype)
        self._writer.write(self._conns[topic], int(log_time_ns), data)
        self.counts[topic] += 1

    def close(self) -> None:
        """Finish the bag (writes metadata.yaml)."""
        self._writer.close()

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close()


def has_header(msgtype: str) -> bool:
    """True when the first field of ``msgtype`` is a std_msgs/Header (its stamp can be shifted)."""
    defs = typestore().fielddefs.get(msgtype)
    if not defs or not defs[1]:
        return False
    first = defs[1][0][1]
    return len(first) > 1 and first[1] == "std_msgs/msg/Header"

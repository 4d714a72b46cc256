"""One ``da3-replay`` run: wait for the node, play in (scaled) real time, settle, sample memory."""

from __future__ import annotations

import math
import os
import threading
import time

from da3_ros.tools.bag.io import BagError, BagReader, has_header
from da3_ros.tools.replay.node_runner import node_tree_rss_mb
from da3_ros.tools.replay.ros_io import ReplayRos, header_stamp_ns, set_header_stamp


class Replayer:
    """Plays ``topics`` of ``reader`` into the node and keeps what is needed for the report.

    Args:
        reader: the open bag.
        topics: topics to play (images first per camera, see ``play_topics``).
        image_cam: ``{image topic: camera name}``.
        opts: ``ReplayOptions``.
        writer: bag for the node's outputs, or None.
        node: the ``NodeRunner`` when the tool started the node, else None.
    """

    def __init__(self, reader: BagReader, topics: list[str], image_cam: dict[str, str], opts, writer, node):
        self.reader, self.topics, self.image_cam, self.opts, self.node = reader, topics, image_cam, opts, node
        self.ros = ReplayRos(opts.node_name, writer)
        for t in topics:
            self.ros.add_publisher(t, reader.msgtype(t))
        self.shiftable = {t: has_header(reader.msgtype(t)) for t in topics}
        self.inputs: list[tuple[str, int, float]] = []  # camera, (shifted) stamp, publish wall time
        self.memory: list[dict] = []
        self.stop_sampling = threading.Event()
        self.play_start = self.play_end = self.settled_at = 0.0
        self.loops = 0
        self.published_messages = 0
        self._t0_mono = time.monotonic()

    # -- phases ----------------------------------------------------------------------------
    def wait_ready(self) -> None:
        """Block until every image topic has a subscriber (the node is up), then discover outputs.

        Bounded twice: a node the tool started has ``wait_ready_s`` to come up (load its model); once
        the node is up (its diagnostics say ``active``, or it subscribes to images) or, for a node the
        tool did not start, from the beginning, the image topics get ``wait_subscribers_s``.

        Raises:
            BagError: the node exited, or the bound passed (naming what the node subscribes to).
        """
        t0 = time.monotonic()
        images = list(self.image_cam)
        up_since = None if self.node is not None else t0
        while not self.ros.subscribers_ready(images):
            self.ros.discover()
            now = time.monotonic()
            if self.node is not None and not self.node.alive():
                raise BagError(f"the node exited (code {self.node.proc.returncode}) before subscribing: "
                               f"{self.node.tail()}")
            heard = self.ros.node_image_subscriptions()
            if up_since is None and (heard or self.ros.snapshot()[2].get("state") == "active"):
                up_since = now
            if up_since is not None and now - up_since > self.opts.wait_subscribers_s:
                raise BagError(self._no_subscriber(images, now - t0, heard))
            if now - t0 > self.opts.wait_ready_s:
                raise BagError(self._no_subscriber(images, now - t0, heard))
            time.sleep(0.1)
        extra = time.monotonic() + 5.0  # companions (camera_info, truth) subscribe at the same time
        while not self.ros.subscribers_ready(self.topics) and time.monotonic() < extra:
            time.sleep(0.1)
        active = time.monotonic() + 10.0  # a lifecycle node subscribes before it is active
        while time.monotonic() < active:
            self.ros.discover()
            _, _, diag = self.ros.snapshot()
            if diag.get("state") == "active":
                break
            time.sleep(0.1)
        time.sleep(self.opts.delay_s)  # both sides of every new match discovered, like `bag play --delay`
        self.ros.discover()

    def _no_subscriber(self, images: list[str], waited_s: float, heard: list[str]) -> str:
        """The error line of :meth:`wait_ready`: what is missing and what the node listens to instead."""
        name = f"/{self.ros.node_name}"
        if heard:
            why = (f"node {name} is up but subscribes to {', '.join(heard)}: its params map other topics "
                   "(--rig maps the bag's cameras)")
        elif self.ros.node_seen():
            why = f"node {name} is up but subscribes to no image topic yet"
        else:
            why = (f"no node {name} on ROS_DOMAIN_ID {os.environ.get('ROS_DOMAIN_ID', '0')}; is the node "
                   "running with these topics on this ROS_DOMAIN_ID?")
        return f"no subscriber on {', '.join(images)} after {waited_s:.0f} s: {why}"

    def _loop_period_ns(self) -> int:
        first_image = next(iter(self.image_cam))
        n = self.reader.topics[first_image][1]
        span = max(self.reader.end_ns - self.reader.start_ns, 0)
        return span + (span // max(n - 1, 1) if n > 1 else 100_000_000)

    def play(self) -> None:
        """Publish the bag's messages on their (rate-scaled) schedule, looping if asked."""
        from tqdm import tqdm

        duration_s = self.opts.duration_min * 60.0
        start_ns, period_ns = self.reader.start_ns, self._loop_period_ns()
        base_ns = time.time_ns()
        self.play_start = t0 = time.monotonic()
        bar = tqdm(total=None if self.opts.loop else sum(self.reader.topics[t][1] for t in self.topics),
                   unit="msg", desc="da3-replay", disable=not self.opts.progress, dynamic_ncols=True)
        last_discover, done = t0, False
        try:
            while not done:
                offset_ns = self.loops * period_ns
                for topic, log_ns, raw in self.reader.messages(self.topics):
                    target = t0 + (log_ns - start_ns + offset_ns) / self.opts.rate * 1e-9
                    if duration_s > 0 and target - t0 >= duration_s:
                        done = True
                        break
                    time.sleep(max(0.0, target - time.monotonic()))
                    self._publish(topic, raw, base_ns + offset_ns - start_ns)
                    bar.update(1)
                    if time.monotonic() - last_discover > 1.0:
                        self.ros.discover()
                        last_discover = time.monotonic()
                self.loops += 1
                done = done or not self.opts.loop
        finally:
            bar.close()
            self.play_end = time.monotonic()

    def _publish(self, topic: str, raw: bytes, shift_ns: int) -> None:
        stamp = header_stamp_ns(raw) if self.shiftable[topic] else None
        if stamp is not None and not self.opts.keep_stamps:
            stamp += shift_ns
            raw = set_header_stamp(raw, stamp)
        t = self.ros.publish(topic, raw)
        self.published_messages += 1
        if topic in self.image_cam and stamp is not None:
            self.inputs.append((self.image_cam[topic], stamp, t))

    def output_receipts(self) -> dict[int, float]:
        """``{stamp: first receipt wall time}`` over every ``/<node>/<camera>/depth`` topic."""
        receipts, _, _ = self.ros.snapshot()
        merged: dict[int, float] = {}
        for topic, by_stamp in receipts.items():
            if topic.startswith(f"/{self.ros.node_name}/") and topic.endswith("/depth"):
                for s, t in by_stamp.items():
                    merged[s] = min(t, merged.get(s, math.inf))
        return merged

    def settle(self) -> None:
        """Wait for outstanding outputs (until none arrive for ``settle_s``), then one fresh diagnostics."""
        cap = time.monotonic() + max(30.0, 4 * self.opts.settle_s)
        wanted = {s for _, s, _ in self.inputs}
        last_n, last_change = -1, time.monotonic()
        while time.monotonic() < cap:
            n = len(wanted & self.output_receipts().keys())
            if n == len(wanted):
                break
            if n != last_n:
                last_n, last_change = n, time.monotonic()
            elif time.monotonic() - last_change > self.opts.settle_s:
                break
            time.sleep(0.2)
        self.settled_at = time.time()
        deadline = time.monotonic() + 5.0
        while self.ros.diagnostics_time < self.settled_at and time.monotonic() < deadline:
            if self.ros.diagnostics_count == 0 and "/diagnostics" not in self.ros.subs:
                self.ros.discover()
            time.sleep(0.1)

    def sample_memory(self) -> None:
        """Every ``sample_period_s``: node RSS (process tree) and GPU memory from diagnostics."""
        pid = self.node.pid if self.node is not None else self.opts.node_pid
        while not self.stop_sampling.is_set():
            _, _, diag = self.ros.snapshot()
            self.memory.append({
                "t_s": round(time.monotonic() - self._t0_mono, 3),
                "rss_mb": node_tree_rss_mb(pid) if pid else math.nan,
                "gpu_allocated_mb": float(diag.get("gpu_mem_allocated_mb", "nan")),
                "gpu_peak_mb": float(diag.get("gpu_mem_peak_mb", "nan")),
                "inputs": len(self.inputs), "outputs": len(self.output_receipts())})
            self.stop_sampling.wait(self.opts.sample_period_s)

    def close(self) -> None:
        """Stop sampling and the DDS side."""
        self.stop_sampling.set()
        self.ros.close()

"""SubscriptionThread: the cameras' messages taken on a thread of their own, never by the executor."""

from __future__ import annotations

import threading
import time

import pytest
from _node_harness import isolated_node
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from da3_ros.ros.intake import SubscriptionThread

pytestmark = pytest.mark.timeout(60)
QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)


@pytest.fixture
def ros():
    with isolated_node("intake_test") as (node, executor):
        spin = threading.Thread(target=lambda: _spin(executor, node.context), daemon=True)
        spin.start()
        yield node
    spin.join(5.0)


def _spin(executor, ctx):
    while ctx.ok():
        try:
            executor.spin_once(timeout_sec=0.05)
        except Exception:  # noqa: BLE001 - shut down under us
            return


def _wait_for(cond, timeout_s=10.0):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and not cond():
        time.sleep(0.01)
    return cond()


def test_messages_arrive_in_order_on_the_thread_and_the_executor_never_takes_them(ros):
    node = ros
    intake = SubscriptionThread(node.context, name="test_intake")
    images, infos, threads = [], [], set()

    def on_image(raw):
        threads.add(threading.current_thread().name)
        images.append(raw)

    def on_info(msg):
        threads.add(threading.current_thread().name)
        infos.append(msg.header.stamp.nanosec)

    lost = SubscriptionEventCallbacks(message_lost=lambda info: None)
    group = intake.group
    subs = [node.create_subscription(Image, "/cam/image", on_image, QOS, raw=True, callback_group=group,
                                     event_callbacks=lost),
            node.create_subscription(CameraInfo, "/cam/info", on_info, QOS, callback_group=group)]
    intake.add(subs)
    img_pub = node.create_publisher(Image, "/cam/image", QOS)
    info_pub = node.create_publisher(CameraInfo, "/cam/info", QOS)
    assert _wait_for(lambda: img_pub.get_subscription_count() and info_pub.get_subscription_count())
    for n in range(1, 41):
        msg = Image(height=2, width=3, encoding="rgb8", step=9, data=bytes([n]) * 18)
        msg.header.stamp.nanosec = n
        img_pub.publish(msg)
        info = CameraInfo()
        info.header.stamp.nanosec = n
        info_pub.publish(info)
    assert _wait_for(lambda: len(images) == 40 and len(infos) == 40)
    assert [raw[-1] for raw in images] == list(range(1, 41))  # raw CDR, in order (last pixel byte)
    assert infos == list(range(1, 41))
    assert threads == {"test_intake"}  # never on the executor's thread
    assert intake.close()
    for sub in subs:
        node.destroy_subscription(sub)


def test_close_stops_taking_and_a_failing_callback_does_not_stop_the_thread(ros):
    node = ros
    errors = []
    intake = SubscriptionThread(node.context, on_error=errors.append)
    got = []

    def flaky(raw):
        got.append(raw)
        if len(got) == 1:
            raise RuntimeError("callback bug")

    sub = node.create_subscription(Image, "/flaky", flaky, QOS, raw=True, callback_group=intake.group)
    intake.add([sub])
    pub = node.create_publisher(Image, "/flaky", QOS)
    assert _wait_for(lambda: pub.get_subscription_count())
    pub.publish(Image())
    pub.publish(Image())
    assert _wait_for(lambda: len(got) == 2)
    assert [str(e) for e in errors] == ["callback bug"]
    assert intake.close()
    pub.publish(Image())
    time.sleep(0.3)
    assert len(got) == 2  # closed: nothing is taken any more (the executor does not take it either)
    node.destroy_subscription(sub)

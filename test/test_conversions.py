"""Message <-> numpy conversions, checked against decoders no one here wrote.

Forward: our message -> rclpy CDR bytes -> rosbags (and mcap_ros2) decode -> compare
every field. Reverse: rosbags-built message -> rosbags CDR -> rclpy -> our reader.
All in-process: serialization needs no rclpy.init and no DDS.
"""

import io

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, Transform
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.typesys import Stores, get_typestore
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, RegionOfInterest
from std_msgs.msg import Header

from da3_ros.core.frames import CameraIntrinsics
from da3_ros.ros.conversions import (
    IMAGE_ENCODINGS,
    ConversionError,
    camera_info_to_intrinsics,
    cdr,
    cloud_to_numpy,
    compressed_to_numpy,
    depth_m_to_mm16,
    image_to_depth_m,
    image_to_numpy,
    image_to_rgb,
    intrinsics_to_camera_info,
    make_header,
    matrix_to_pose,
    matrix_to_quaternion,
    matrix_to_transform,
    mm16_to_depth_m,
    ns_to_stamp,
    numpy_to_compressed,
    numpy_to_image,
    points_to_cloud,
    pose_to_matrix,
    quaternion_to_matrix,
    stamp_to_ns,
    unpack_rgb,
)

TS = get_typestore(Stores.ROS2_KILTED)
RB = TS.types
DEPTH_LIKE = ("mono16", "16UC1", "32FC1")


def via_rosbags(msg, typename):
    """rclpy message -> CDR bytes -> rosbags message."""
    return TS.deserialize_cdr(bytes(serialize_message(msg)), typename)


def from_rosbags(rb_msg, typename, cls):
    """rosbags message -> CDR bytes -> rclpy message."""
    return deserialize_message(bytes(TS.serialize_cdr(rb_msg, typename)), cls)


def rb_header(sec=12, nanosec=345, frame_id="cam_optical_frame"):
    return RB["std_msgs/msg/Header"](stamp=RB["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                     frame_id=frame_id)


def sample_array(encoding, h=5, w=7, seed=0):
    rng = np.random.default_rng(seed)
    code, channels = IMAGE_ENCODINGS[encoding]
    shape = (h, w) if channels == 1 else (h, w, channels)
    if code == "f4":
        a = rng.uniform(0.1, 80.0, shape).astype(np.float32)
        a[0, 0] = np.nan
        return a
    return rng.integers(0, np.iinfo(code).max, shape, endpoint=True).astype(code)


def views_msg_data(arr, msg):
    return np.shares_memory(arr, np.frombuffer(msg.data, dtype=np.uint8))


# ----------------------------------------------------------------------------- raw images
@pytest.mark.parametrize("encoding", list(IMAGE_ENCODINGS))
def test_image_round_trip_matches_rosbags(encoding):
    arr = sample_array(encoding)
    code, channels = IMAGE_ENCODINGS[encoding]
    header = make_header(12 * 10**9 + 345, "cam_optical_frame")
    msg = numpy_to_image(arr, encoding, header=header)
    assert (msg.height, msg.width, msg.step) == (5, 7, 7 * channels * np.dtype(code).itemsize)
    back, enc = image_to_numpy(msg)
    assert enc == encoding and back.dtype == np.dtype(code) and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)
    assert views_msg_data(back, msg)

    rb = via_rosbags(msg, "sensor_msgs/msg/Image")
    stamp = rb.header.stamp
    assert (stamp.sec, stamp.nanosec, rb.header.frame_id) == (12, 345, "cam_optical_frame")
    assert (rb.height, rb.width, rb.encoding, rb.is_bigendian, rb.step) == (5, 7, encoding, 0, msg.step)
    assert rb.data.tobytes() == arr.astype("<" + code).tobytes()
    independent = rb.data.view("<" + code).reshape(arr.shape)
    np.testing.assert_array_equal(independent, arr)
    np.testing.assert_array_equal(image_to_numpy(rb)[0], arr)  # rosbags messages are accepted too


@pytest.mark.parametrize("frame_id", ["", "c", "cam_optical_frame", "x" * 13])
@pytest.mark.parametrize("encoding", ["rgb8", "mono16", "32FC1"])
def test_raw_cdr_image_reads_like_the_deserialised_message(encoding, frame_id):
    """cdr.decode_image on bytes rclpy wrote, and on bytes rosbags wrote (little and big-endian CDR)."""
    arr = sample_array(encoding, seed=4)
    msg = numpy_to_image(arr, encoding, header=make_header(7 * 10**9 + 11, frame_id))
    raw = bytes(serialize_message(msg))
    fast = cdr.decode_image(raw)
    assert (fast.header.stamp.sec, fast.header.stamp.nanosec, fast.header.frame_id) == (7, 11, frame_id)
    assert (fast.height, fast.width, fast.encoding, fast.step) == (msg.height, msg.width, encoding, msg.step)
    back, _ = image_to_numpy(fast)
    np.testing.assert_array_equal(back, arr)
    assert np.shares_memory(back, np.frombuffer(raw, np.uint8))  # a view into the received bytes
    rb = via_rosbags(msg, "sensor_msgs/msg/Image")
    for little in (True, False):
        other = TS.serialize_cdr(rb, "sensor_msgs/msg/Image", little_endian=little)
        got = cdr.decode_image(bytes(other))
        assert (got.header.frame_id, got.height, got.width, got.encoding, got.step) == (
            frame_id, msg.height, msg.width, encoding, msg.step)
        np.testing.assert_array_equal(image_to_numpy(got)[0], arr)


def test_raw_cdr_compressed_image_and_bad_bytes():
    img = sample_array("rgb8", h=8, w=12, seed=5)
    msg = numpy_to_compressed(img, "png", header=make_header(5, "f"))
    fast = cdr.decode_compressed_image(bytes(serialize_message(msg)))
    assert fast.header.frame_id == "f" and fast.format == msg.format
    np.testing.assert_array_equal(compressed_to_numpy(fast), img)
    np.testing.assert_array_equal(image_to_rgb(fast), img)
    raw = bytes(serialize_message(numpy_to_image(img, "rgb8")))
    with pytest.raises(ConversionError, match="truncated"):
        cdr.decode_image(raw[:60])
    with pytest.raises(ConversionError, match="CDR"):
        cdr.decode_image(b"\x07\x07" + raw[2:])


def padded_image_bytes(arr, code, pad, big_endian):
    """Rows of ``arr`` in the given byte order, each followed by ``pad`` bytes of 0xAB."""
    rows = arr.astype((">" if big_endian else "<") + code).reshape(arr.shape[0], -1).view(np.uint8)
    filler = np.full((arr.shape[0], pad), 0xAB, np.uint8)
    return np.hstack([rows, filler]).tobytes(), rows.shape[1] + pad


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("encoding", list(IMAGE_ENCODINGS))
def test_padded_and_big_endian_image_built_by_rosbags(encoding, big_endian):
    arr = sample_array(encoding, seed=1)
    code, _ = IMAGE_ENCODINGS[encoding]
    data, step = padded_image_bytes(arr, code, pad=5, big_endian=big_endian)
    rb = RB["sensor_msgs/msg/Image"](header=rb_header(), height=5, width=7, encoding=encoding,
                                     is_bigendian=int(big_endian), step=step,
                                     data=np.frombuffer(data, np.uint8))
    msg = from_rosbags(rb, "sensor_msgs/msg/Image", Image)
    assert msg.step == step and len(msg.data) == 5 * step
    back, _ = image_to_numpy(msg)
    np.testing.assert_array_equal(back, arr)
    assert back.dtype.isnative
    multibyte = np.dtype(code).itemsize > 1
    # zero-copy unless the bytes must be swapped
    assert views_msg_data(back, msg) == (not (big_endian and multibyte))


@pytest.mark.parametrize("encoding", DEPTH_LIKE)
def test_big_endian_array_writes_big_endian_message(encoding):
    arr = sample_array(encoding, seed=2)
    code, _ = IMAGE_ENCODINGS[encoding]
    msg = numpy_to_image(arr.astype(">" + code), encoding)
    assert msg.is_bigendian
    rb = via_rosbags(msg, "sensor_msgs/msg/Image")
    assert rb.is_bigendian == 1
    np.testing.assert_array_equal(rb.data.view(">" + code).reshape(arr.shape), arr)
    np.testing.assert_array_equal(image_to_numpy(msg)[0], arr)


def test_numpy_to_image_accepts_views_and_single_channel_axis():
    base = sample_array("rgb8", h=6, w=9, seed=3)
    view = base[1::2, ::3]  # non-contiguous
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(view, "rgb8"))[0], view)
    depth = sample_array("32FC1", seed=4)
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(depth[..., None], "32FC1"))[0], depth)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16"])
def test_image_to_rgb_from_every_colour_encoding(encoding):
    arr = sample_array(encoding, seed=5)
    expected = {
        "rgb8": lambda a: a,
        "bgr8": lambda a: cv2.cvtColor(a, cv2.COLOR_BGR2RGB),
        "rgba8": lambda a: cv2.cvtColor(a, cv2.COLOR_RGBA2RGB),
        "bgra8": lambda a: cv2.cvtColor(a, cv2.COLOR_BGRA2RGB),
        "mono8": lambda a: cv2.cvtColor(a, cv2.COLOR_GRAY2RGB),
        "mono16": lambda a: cv2.cvtColor((a // 256).astype(np.uint8), cv2.COLOR_GRAY2RGB),
    }[encoding](arr)
    msg = numpy_to_image(arr, encoding)
    rgb = image_to_rgb(msg)
    assert rgb.dtype == np.uint8 and rgb.shape == (5, 7, 3) and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, expected)
    assert views_msg_data(rgb, msg) == (encoding == "rgb8")
    np.testing.assert_array_equal(image_to_rgb(via_rosbags(msg, "sensor_msgs/msg/Image")), expected)


def test_depth_millimetre_helpers():
    depth = np.array([[1.5, 0.0, np.nan], [-2.0, 70.0, 0.0004], [65.535, np.inf, 0.0016]])
    mm = depth_m_to_mm16(depth)
    assert mm.dtype == np.uint16
    np.testing.assert_array_equal(mm, [[1500, 0, 0], [0, 0, 0], [65535, 0, 2]])
    back = mm16_to_depth_m(mm)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(back), mm == 0)
    np.testing.assert_allclose(back[mm > 0], mm[mm > 0] / 1000.0, rtol=1e-6)
    msg = numpy_to_image(mm, "16UC1")
    np.testing.assert_array_equal(image_to_depth_m(msg), back)
    f32 = numpy_to_image(depth.astype(np.float32), "32FC1")
    d = image_to_depth_m(f32)
    np.testing.assert_array_equal(d, depth.astype(np.float32))
    assert views_msg_data(d, f32)


# ----------------------------------------------------------------------------- compressed
def test_png_round_trip_is_exact_and_matches_rosbags():
    rgb = sample_array("rgb8", h=16, w=20, seed=6)
    msg = numpy_to_compressed(rgb, "png", header=make_header(5, "cam"))
    assert msg.format == "rgb8; png compressed bgr8"
    np.testing.assert_array_equal(compressed_to_numpy(msg), rgb)
    rb = via_rosbags(msg, "sensor_msgs/msg/CompressedImage")
    assert rb.format == msg.format and rb.header.stamp.nanosec == 5 and rb.header.frame_id == "cam"
    independent = cv2.cvtColor(cv2.imdecode(rb.data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(independent, rgb)
    np.testing.assert_array_equal(image_to_rgb(rb), rgb)


def test_jpeg_round_trip_is_close():
    yy, xx = np.mgrid[0:32, 0:48]
    rgb = np.stack([xx * 5, yy * 7, (xx + yy) * 3], axis=-1).astype(np.uint8)  # smooth: jpeg-friendly
    msg = numpy_to_compressed(rgb, "jpeg", quality=95)
    assert msg.format == "rgb8; jpeg compressed bgr8"
    out = image_to_rgb(msg)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).mean() < 3.0
    # a channel swap would be far off
    assert np.abs(out[..., ::-1].astype(int) - rgb).mean() > 20.0


FORMATS = ["jpeg", "png", "", "bgr8; jpeg compressed bgr8", "rgb8; png compressed bgr8"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_compressed_built_by_rosbags_with_format_variants(fmt):
    colours = np.array([[[200, 30, 60], [20, 180, 90]], [[40, 70, 220], [250, 240, 10]]], np.uint8)
    rgb = np.repeat(np.repeat(colours, 16, axis=0), 16, axis=1)  # 16x16 flat blocks survive jpeg
    ext = ".png" if ("png" in fmt or fmt == "") else ".jpg"
    ok, enc = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert ok
    rb = RB["sensor_msgs/msg/CompressedImage"](header=rb_header(), format=fmt, data=enc.reshape(-1))
    msg = from_rosbags(rb, "sensor_msgs/msg/CompressedImage", CompressedImage)
    out = compressed_to_numpy(msg)
    tol = 0 if ext == ".png" else 8
    assert out.shape == rgb.shape
    block_centres = np.abs(out.astype(int) - rgb).reshape(2, 16, 2, 16, 3)[:, 4:12, :, 4:12]
    assert block_centres.max() <= tol


def test_compressed_rgb8_stream_is_not_swapped_again_and_mono_is_grey():
    rgb = sample_array("rgb8", h=6, w=6, seed=8)
    _, enc = cv2.imencode(".png", rgb)  # RGB bytes in OpenCV's BGR slots
    msg = CompressedImage(format="rgb8; png compressed rgb8")
    msg.data = enc.tobytes()
    np.testing.assert_array_equal(compressed_to_numpy(msg), rgb)
    grey = sample_array("mono8", seed=9)
    mono = numpy_to_compressed(grey, "png")
    assert mono.format == "mono8; png compressed mono8"
    np.testing.assert_array_equal(image_to_rgb(mono), np.repeat(grey[..., None], 3, axis=2))


# ----------------------------------------------------------------------------- CameraInfo
def sample_intrinsics():
    K = np.array([[520.5, 0.0, 319.25], [0.0, 518.0, 241.75], [0.0, 0.0, 1.0]])
    return CameraIntrinsics(K=K, width=640, height=480, D=np.array([0.1, -0.2, 0.001, 0.002, 0.05]),
                            distortion_model="plumb_bob")


def test_camera_info_round_trip_matches_rosbags():
    intr = sample_intrinsics()
    msg = intrinsics_to_camera_info(intr, header=make_header(7, "cam_optical_frame"))
    rb = via_rosbags(msg, "sensor_msgs/msg/CameraInfo")
    assert (rb.width, rb.height, rb.distortion_model) == (640, 480, "plumb_bob")
    np.testing.assert_array_equal(rb.k.reshape(3, 3), intr.K)
    np.testing.assert_array_equal(rb.d, intr.D)
    np.testing.assert_array_equal(rb.r.reshape(3, 3), np.eye(3))
    np.testing.assert_array_equal(rb.p.reshape(3, 4), np.hstack([intr.K, np.zeros((3, 1))]))
    assert (rb.binning_x, rb.binning_y, rb.roi.width, rb.roi.height) == (0, 0, 0, 0)
    assert rb.header.frame_id == "cam_optical_frame" and rb.header.stamp.nanosec == 7
    back = camera_info_to_intrinsics(msg)
    np.testing.assert_array_equal(back.K, intr.K)
    np.testing.assert_array_equal(back.D, intr.D)
    assert (back.width, back.height, back.distortion_model) == (640, 480, "plumb_bob")
    half = camera_info_to_intrinsics(msg, width=320, height=240)
    np.testing.assert_allclose(half.K, intr.scaled(320, 240).K)
    assert (half.width, half.height) == (320, 240)
    assert half.K[0, 0] == pytest.approx(260.25) and half.K[0, 2] == pytest.approx((319.25 + 0.5) / 2 - 0.5)


def test_camera_info_empty_model_becomes_plumb_bob():
    intr = CameraIntrinsics(K=sample_intrinsics().K, width=640, height=480)
    rb = via_rosbags(intrinsics_to_camera_info(intr), "sensor_msgs/msg/CameraInfo")
    assert rb.distortion_model == "plumb_bob"
    np.testing.assert_array_equal(rb.d, np.zeros(5))


def test_camera_info_built_by_rosbags_with_roi_and_binning():
    K = sample_intrinsics().K
    P = np.hstack([K * [[0.9], [0.9], [1]], np.zeros((3, 1))])
    rb = RB["sensor_msgs/msg/CameraInfo"](
        header=rb_header(), height=480, width=640, distortion_model="rational_polynomial",
        d=np.arange(8, dtype=np.float64) / 100, k=K.ravel().copy(), r=np.eye(3).ravel(), p=P.ravel(),
        binning_x=2, binning_y=2,
        roi=RB["sensor_msgs/msg/RegionOfInterest"](x_offset=100, y_offset=40, height=400, width=300,
                                                   do_rectify=False))
    msg = from_rosbags(rb, "sensor_msgs/msg/CameraInfo", CameraInfo)
    intr = camera_info_to_intrinsics(msg)
    assert (intr.width, intr.height, intr.distortion_model) == (150, 200, "rational_polynomial")
    expected = np.array([[520.5 / 2, 0, (319.25 - 100) / 2], [0, 518.0 / 2, (241.75 - 40) / 2], [0, 0, 1]])
    np.testing.assert_allclose(intr.K, expected)
    np.testing.assert_array_equal(intr.D, np.arange(8) / 100)
    rect = camera_info_to_intrinsics(msg, rectified=True)
    np.testing.assert_allclose(rect.K[0, 0], 520.5 * 0.9 / 2)
    assert rect.D.size == 0


# ----------------------------------------------------------------------------- PointCloud2
CLOUD_DTYPE = np.dtype({"names": ["x", "y", "z", "rgb", "confidence"],
                        "formats": ["<f4", "<f4", "<f4", "<u4", "<f4"],
                        "offsets": [0, 4, 8, 12, 16], "itemsize": 20})


def sample_cloud(n=50, seed=10):
    rng = np.random.default_rng(seed)
    xyz = rng.normal(size=(n, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    rgb[0] = [255, 255, 255]
    conf = rng.uniform(1, 5, n).astype(np.float32)
    return xyz, rgb, conf


def test_unorganized_cloud_matches_rosbags_bytes():
    xyz, rgb, conf = sample_cloud()
    xyz[3, 1] = np.nan
    msg = points_to_cloud(xyz, header=make_header(9, "da3_odom"), rgb=rgb, confidence=conf)
    rb = via_rosbags(msg, "sensor_msgs/msg/PointCloud2")
    assert (rb.height, rb.width, rb.point_step, rb.row_step) == (1, 50, 20, 1000)
    assert (rb.is_bigendian, rb.is_dense) == (False, False)
    assert [(f.name, f.offset, f.datatype, f.count) for f in rb.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("rgb", 12, 7, 1), ("confidence", 16, 7, 1)]
    assert rb.header.frame_id == "da3_odom" and rb.header.stamp.nanosec == 9
    raw = rb.data.view(CLOUD_DTYPE)
    np.testing.assert_array_equal(np.stack([raw["x"], raw["y"], raw["z"]], -1), xyz)
    packed = raw["rgb"]
    np.testing.assert_array_equal(packed >> 16, rgb[:, 0])
    np.testing.assert_array_equal((packed >> 8) & 0xFF, rgb[:, 1])
    np.testing.assert_array_equal(packed & 0xFF, rgb[:, 2])
    assert packed[0] == 0x00FFFFFF
    np.testing.assert_array_equal(raw["confidence"], conf)

    ours = cloud_to_numpy(msg)
    assert ours.shape == (50,) and views_msg_data(ours, msg)
    assert ours.dtype["rgb"] == np.float32
    np.testing.assert_array_equal(unpack_rgb(ours["rgb"]), rgb)
    np.testing.assert_array_equal(ours["confidence"], conf)


def test_organized_cloud_and_mcap_ros2_decoder():
    from mcap.reader import make_reader
    from mcap.writer import Writer
    from mcap_ros2.decoder import DecoderFactory

    xyz, rgb, conf = sample_cloud(n=12, seed=11)
    msg = points_to_cloud(xyz.reshape(3, 4, 3), rgb=rgb.reshape(3, 4, 3), confidence=conf.reshape(3, 4))
    assert (msg.height, msg.width, msg.row_step, msg.is_dense) == (3, 4, 80, True)
    ours = cloud_to_numpy(msg)
    assert ours.shape == (3, 4) and views_msg_data(ours, msg)
    np.testing.assert_array_equal(ours["z"], xyz[:, 2].reshape(3, 4))

    buf = io.BytesIO()
    writer = Writer(buf)
    writer.start()
    text = TS.generate_msgdef("sensor_msgs/msg/PointCloud2", ros_version=2)[0]
    schema = writer.register_schema(name="sensor_msgs/msg/PointCloud2", encoding="ros2msg",
                                    data=text.encode())
    channel = writer.register_channel(topic="/cloud", message_encoding="cdr", schema_id=schema)
    writer.add_message(channel, log_time=1, publish_time=1, data=bytes(serialize_message(msg)))
    writer.finish()
    buf.seek(0)
    reader = make_reader(buf, decoder_factories=[DecoderFactory()])
    decoded = [m for _, _, _, m in reader.iter_decoded_messages()]
    assert len(decoded) == 1
    dec = decoded[0]
    assert (dec.height, dec.width, dec.point_step, dec.row_step, dec.is_dense) == (3, 4, 20, 80, True)
    raw = np.frombuffer(bytes(dec.data), CLOUD_DTYPE)
    np.testing.assert_array_equal(raw["x"], xyz[:, 0])
    np.testing.assert_array_equal(unpack_rgb(raw["rgb"]), rgb)
    np.testing.assert_array_equal(raw["confidence"], conf)


@pytest.mark.parametrize("big_endian", [False, True])
def test_padded_pcl_style_cloud_built_by_rosbags(big_endian):
    # PCL's PointXYZRGB layout: x y z <pad> rgb <pad...>, 32-byte points, padded rows
    xyz, rgb, _ = sample_cloud(n=6, seed=12)
    order = ">" if big_endian else "<"
    layout = np.dtype({"names": ["x", "y", "z", "rgb", "intensity"],
                       "formats": [order + "f4"] * 3 + [order + "u4", order + "f8"],
                       "offsets": [0, 4, 8, 16, 24], "itemsize": 32})
    pts = np.zeros((2, 3), layout)
    for i, a in enumerate("xyz"):
        pts[a] = xyz[:, i].reshape(2, 3)
    r, g, b = (rgb[:, i].astype(np.uint32) for i in range(3))
    pts["rgb"] = ((r << 16) | (g << 8) | b).reshape(2, 3)
    pts["intensity"] = np.arange(6.0).reshape(2, 3)
    rows = np.hstack([pts.view(np.uint8).reshape(2, 96), np.full((2, 8), 0xCD, np.uint8)])
    Field = RB["sensor_msgs/msg/PointField"]
    fields = [Field(name=n, offset=o, datatype=d, count=1)
              for n, o, d in [("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("rgb", 16, 7), ("intensity", 24, 8)]]
    rb = RB["sensor_msgs/msg/PointCloud2"](header=rb_header(), height=2, width=3, fields=fields,
                                           is_bigendian=big_endian, point_step=32, row_step=104,
                                           data=rows.reshape(-1), is_dense=True)
    msg = from_rosbags(rb, "sensor_msgs/msg/PointCloud2", PointCloud2)
    ours = cloud_to_numpy(msg)
    assert ours.shape == (2, 3) and ours.dtype.isnative
    assert views_msg_data(ours, msg) == (not big_endian)
    np.testing.assert_array_equal(np.stack([ours[a] for a in "xyz"], -1).reshape(6, 3), xyz)
    np.testing.assert_array_equal(unpack_rgb(ours["rgb"]).reshape(6, 3), rgb)
    np.testing.assert_array_equal(ours["intensity"].ravel(), np.arange(6.0))


def test_empty_cloud_is_valid():
    msg = points_to_cloud(np.zeros((0, 3), np.float32))
    rb = via_rosbags(msg, "sensor_msgs/msg/PointCloud2")
    assert (rb.height, rb.width, rb.row_step, len(rb.data), rb.is_dense) == (1, 0, 0, 0, True)
    assert cloud_to_numpy(msg).shape == (0,)


# ----------------------------------------------------------------------------- poses
def random_transforms(n=20, seed=13):
    rots = Rotation.random(n, random_state=seed)
    out = np.tile(np.eye(4), (n, 1, 1))
    out[:, :3, :3] = rots.as_matrix()
    out[:, :3, 3] = np.random.default_rng(seed).normal(size=(n, 3)) * 5
    # rotations by pi about each axis and near it exercise every branch of the quaternion extraction
    specials = [Rotation.from_rotvec(np.pi * np.eye(3)[i]).as_matrix() for i in range(3)]
    specials += [Rotation.from_rotvec(3.1 * np.array([1.0, 2.0, -0.5]) / np.sqrt(5.25)).as_matrix()]
    extra = np.tile(np.eye(4), (len(specials), 1, 1))
    extra[:, :3, :3] = specials
    return np.concatenate([out, extra])


@pytest.mark.parametrize("kind", ["pose", "transform"])
def test_pose_and_transform_match_rosbags_and_scipy(kind):
    for T in random_transforms():
        if kind == "pose":
            msg, typename = matrix_to_pose(T), "geometry_msgs/msg/Pose"
        else:
            msg, typename = matrix_to_transform(T), "geometry_msgs/msg/Transform"
        rb = via_rosbags(msg, typename)
        p, q = (rb.position, rb.orientation) if kind == "pose" else (rb.translation, rb.rotation)
        np.testing.assert_allclose([p.x, p.y, p.z], T[:3, 3], atol=1e-12)
        quat = np.array([q.x, q.y, q.z, q.w])
        ref = Rotation.from_matrix(T[:3, :3]).as_quat()  # scipy: (x, y, z, w), scalar last
        assert quat[3] >= 0.0
        assert np.linalg.norm(quat) == pytest.approx(1.0, abs=1e-12)
        assert min(np.abs(quat - ref).max(), np.abs(quat + ref).max()) < 1e-9
        np.testing.assert_allclose(Rotation.from_quat(quat).as_matrix(), T[:3, :3], atol=1e-9)
        cls = Pose if kind == "pose" else Transform
        back = deserialize_message(serialize_message(msg), cls)
        np.testing.assert_allclose(pose_to_matrix(back), T, atol=1e-9)


def test_pose_built_by_rosbags_normalises_and_ignores_sign():
    rot = Rotation.from_euler("xyz", [0.3, -1.2, 2.5])
    q = rot.as_quat()
    for scale in (3.0, -0.5):  # unnormalised, and the negated (w < 0) double cover
        qs = q * scale
        rb = RB["geometry_msgs/msg/Pose"](
            position=RB["geometry_msgs/msg/Point"](x=1.0, y=-2.0, z=0.5),
            orientation=RB["geometry_msgs/msg/Quaternion"](x=qs[0], y=qs[1], z=qs[2], w=qs[3]))
        T = pose_to_matrix(from_rosbags(rb, "geometry_msgs/msg/Pose", Pose))
        np.testing.assert_allclose(T[:3, :3], rot.as_matrix(), atol=1e-12)
        np.testing.assert_allclose(T[:3, 3], [1.0, -2.0, 0.5])
        np.testing.assert_array_equal(T[3], [0, 0, 0, 1])
    np.testing.assert_allclose(quaternion_to_matrix(-q), rot.as_matrix(), atol=1e-12)
    assert matrix_to_quaternion(rot.as_matrix())[3] >= 0


def test_matrix_to_pose_accepts_3x4_and_float32():
    T = random_transforms(n=1)[0]
    np.testing.assert_allclose(pose_to_matrix(matrix_to_pose(T[:3].astype(np.float32))), T, atol=1e-6)


# ----------------------------------------------------------------------------- time
@pytest.mark.parametrize("ns", [0, 1, 1_500_000_007, -1, 1_763_769_600_123_456_789, 2**31 * 10**9 - 1])
def test_stamps_round_trip_through_rosbags(ns):
    header = make_header(ns, "f")
    rb = via_rosbags(header, "std_msgs/msg/Header")
    assert rb.stamp.sec * 10**9 + rb.stamp.nanosec == ns
    assert 0 <= rb.stamp.nanosec < 10**9
    assert stamp_to_ns(rb.stamp) == ns
    assert stamp_to_ns(deserialize_message(serialize_message(ns_to_stamp(ns)), Time)) == ns


# ----------------------------------------------------------------------------- bad input
def image_msg(encoding="rgb8", height=2, width=3, step=None, nbytes=None):
    msg = Image(height=height, width=width, encoding=encoding)
    msg.step = 9 if step is None else step
    msg.data = bytes(msg.height * msg.step if nbytes is None else nbytes)
    return msg


def bad_cases():
    flat = CompressedImage(format="jpeg")
    flat.data = bytes(cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1])
    broken = CompressedImage(format="jpeg")
    broken.data = b"\xff\xd8\xff" + bytes(40)
    tiff = CompressedImage(format="tiff")
    tiff.data = b"II*\x00" + bytes(8)
    depth_c = CompressedImage(format="16UC1; compressedDepth png")
    depth_c.data = bytes(20)
    no_k = CameraInfo(width=640, height=480)
    roi = CameraInfo(width=64, height=48, k=sample_intrinsics().K.ravel(),
                     roi=RegionOfInterest(x_offset=40, y_offset=0, width=40, height=10))
    short_cloud = points_to_cloud(np.zeros((4, 3), np.float32))
    short_cloud.data = bytes(40)
    scaled = np.diag([2.0, 2.0, 2.0, 1.0])
    nan_pose = np.eye(4)
    nan_pose[0, 3] = np.nan
    zero_q = Pose()
    zero_q.orientation.w = 0.0
    return [
        (lambda: image_to_numpy(image_msg("yuv422")), "unsupported image encoding 'yuv422'"),
        (lambda: image_to_numpy(image_msg(nbytes=17)), "17 bytes, shorter than height * step"),
        (lambda: image_to_numpy(image_msg(height=0)), "empty image: 0 rows"),
        (lambda: image_to_numpy(image_msg(width=0)), "0 columns"),
        (lambda: image_to_numpy(image_msg("32FC1", step=8)),
         "step 8 is smaller than width * bytes per pixel"),
        (lambda: numpy_to_image(np.zeros((2, 3)), "32FC1"), "dtype float64 does not match encoding 32FC1"),
        (lambda: numpy_to_image(np.zeros((2, 3, 3), np.uint16), "rgb8"), "dtype uint16 does not match"),
        (lambda: numpy_to_image(np.zeros((2, 3, 4), np.uint8), "rgb8"), "does not match encoding rgb8"),
        (lambda: numpy_to_image(np.zeros((0, 3), np.uint8), "mono8"), "empty image: 0 rows"),
        (lambda: numpy_to_image(np.zeros((2, 3), np.uint8), "8UC2"), "unsupported image encoding"),
        (lambda: image_to_rgb(numpy_to_image(np.zeros((2, 2), np.float32), "32FC1")), "not a colour"),
        (lambda: image_to_depth_m(numpy_to_image(np.zeros((2, 2), np.uint8), "mono8")), "not a depth image"),
        (lambda: compressed_to_numpy(flat), "not a jpeg stream"),
        (lambda: compressed_to_numpy(broken), "could not decode"),
        (lambda: compressed_to_numpy(tiff), "unsupported CompressedImage format 'tiff'"),
        (lambda: compressed_to_numpy(depth_c), "compressedDepth"),
        (lambda: compressed_to_numpy(CompressedImage(format="png")), "has no data"),
        (lambda: numpy_to_compressed(np.zeros((4, 4, 3), np.float32)), "uint8"),
        (lambda: camera_info_to_intrinsics(no_k), "uncalibrated"),
        (lambda: camera_info_to_intrinsics(roi), "ROI 40x10+40+0 lies outside"),
        (lambda: camera_info_to_intrinsics(intrinsics_to_camera_info(sample_intrinsics()), width=3),
         "both width and height"),
        (lambda: cloud_to_numpy(short_cloud), "shorter than height * row_step"),
        (lambda: points_to_cloud(np.zeros((4, 2))), "points must be"),
        (lambda: points_to_cloud(np.zeros((4, 3)), rgb=np.zeros((4, 3))), "rgb must be uint8"),
        (lambda: points_to_cloud(np.zeros((4, 3)), confidence=np.zeros(3)), "confidence must be"),
        (lambda: pose_to_matrix(zero_q), "zero norm"),
        (lambda: quaternion_to_matrix([np.nan, 0, 0, 1]), "not finite"),
        (lambda: matrix_to_pose(nan_pose), "NaN or inf in pose matrix"),
        (lambda: matrix_to_transform(scaled), "not a proper rotation"),
        (lambda: matrix_to_pose(np.diag([1.0, 1.0, -1.0, 1.0])), "reflection"),
        (lambda: matrix_to_pose(np.ones((4, 4))), "bottom row"),
        (lambda: matrix_to_pose(np.eye(3)), "(4, 4) or (3, 4)"),
        (lambda: pose_to_matrix(Header()), "expected geometry_msgs Pose or Transform"),
        (lambda: ns_to_stamp(1.5e9), "integer nanoseconds"),
        (lambda: ns_to_stamp(2**31 * 10**9), "does not fit Time.sec"),
    ]


@pytest.mark.parametrize("case", range(len(bad_cases())))
def test_bad_input_raises_an_error_naming_the_problem(case):
    call, words = bad_cases()[case]
    with pytest.raises(ConversionError) as info:
        call()
    assert words in str(info.value)
    assert isinstance(info.value, ValueError)


def test_cloud_with_field_beyond_point_step_or_unknown_type_is_rejected():
    msg = points_to_cloud(np.zeros((2, 3), np.float32))
    msg.point_step = 8
    msg.row_step = 16
    with pytest.raises(ConversionError, match="'z' ends at byte 12, beyond point_step 8"):
        cloud_to_numpy(msg)
    msg = points_to_cloud(np.zeros((2, 3), np.float32))
    msg.fields[1].datatype = 42
    with pytest.raises(ConversionError, match="unknown datatype 42"):
        cloud_to_numpy(msg)


@pytest.mark.parametrize("frame_id", ["", "c", "cam_optical_frame", "x" * 13])
@pytest.mark.parametrize("encoding", list(IMAGE_ENCODINGS))
def test_image_serialised_here_is_what_rclpy_serialises_and_rosbags_reads(encoding, frame_id):
    """numpy_to_image_cdr: bytes that rclpy and rosbags decode into numpy_to_image's message (rclpy
    leaves its alignment padding uninitialised, so the bytes themselves are not compared)."""
    from da3_ros.ros.conversions import cdr_stamp_ns, numpy_to_image_cdr

    arr = sample_array(encoding, seed=5)
    stamp = 1_700_000_000 * 10**9 + 123_456_789
    raw = numpy_to_image_cdr(arr, encoding, stamp, frame_id)
    msg = numpy_to_image(arr, encoding, header=make_header(stamp, frame_id))
    assert deserialize_message(raw, Image) == msg and len(raw) == len(serialize_message(msg))
    assert cdr_stamp_ns(raw) == stamp
    rb = TS.deserialize_cdr(raw, "sensor_msgs/msg/Image")  # an independent decoder
    assert (rb.header.frame_id, rb.encoding, rb.height, rb.width) == (frame_id, encoding, *arr.shape[:2])
    np.testing.assert_array_equal(image_to_numpy(rb)[0], arr)
    with pytest.raises(ConversionError, match="does not match"):
        numpy_to_image_cdr(arr.astype(np.float64), encoding, stamp, frame_id)


@pytest.mark.parametrize("frame_id", ["", "odom", "da3_odom_frame"])
@pytest.mark.parametrize("extras", [(), ("rgb",), ("rgb", "confidence"), ("confidence",)])
@pytest.mark.parametrize("shape", [(0,), (7,), (3, 4)], ids=["empty", "unorganized", "organized"])
def test_cloud_serialised_here_reads_like_points_to_cloud(shape, extras, frame_id):
    """points_to_cloud_cdr: rclpy and rosbags decode it into points_to_cloud's message."""
    from da3_ros.ros.conversions import points_to_cloud_cdr

    rng = np.random.default_rng(6)
    pts = rng.normal(size=shape + (3,)).astype(np.float32)
    if pts.size:
        pts.reshape(-1, 3)[0, 2] = np.nan  # not dense
    kw = {"rgb": rng.integers(0, 256, shape + (3,), dtype=np.uint8)} if "rgb" in extras else {}
    if "confidence" in extras:
        kw["confidence"] = rng.uniform(1, 3, shape).astype(np.float32)
    stamp = 3 * 10**9 + 17
    raw = points_to_cloud_cdr(pts, stamp, frame_id, **kw)
    msg = points_to_cloud(pts, make_header(stamp, frame_id), **kw)
    assert deserialize_message(raw, PointCloud2) == msg and len(raw) == len(serialize_message(msg))
    rb = TS.deserialize_cdr(raw, "sensor_msgs/msg/PointCloud2")  # an independent decoder
    assert (rb.height, rb.width, rb.is_dense) == (msg.height, msg.width, msg.is_dense)
    got = cloud_to_numpy(rb)
    np.testing.assert_array_equal(np.stack([got[a] for a in "xyz"], -1), pts)


@pytest.mark.parametrize("bad_axis", [None, 0, 1, 2])
def test_cloud_packed_in_the_fixed_frame_equals_points_converted_first(bad_axis):
    """pack_cloud(axes=FIXED_AXES) packs world points in the fixed frame in one pass: the same bytes
    as points_to_fixed then pack_cloud; is_dense sees a NaN in any of x, y, z."""
    from da3_ros.core import wire
    from da3_ros.core.geometry import FIXED_AXES, points_to_fixed

    rng = np.random.default_rng(11)
    pts = rng.normal(size=(50, 3)).astype(np.float32)
    if bad_axis is not None:
        pts[8, bad_axis] = np.nan  # an even row: in once[::2] too
    rgb = rng.integers(0, 256, (50, 3), dtype=np.uint8)
    conf = rng.uniform(1, 3, 50).astype(np.float32)
    once, names = wire.pack_cloud(pts, rgb, conf, axes=FIXED_AXES)
    twice, _ = wire.pack_cloud(points_to_fixed(pts), rgb, conf)
    assert names == ["x", "y", "z", "rgb", "confidence"] and once.tobytes() == twice.tobytes()
    assert wire.cloud_is_dense(once) is (bad_axis is None)
    strided = once[::2]  # not contiguous: the field-by-field check
    assert wire.cloud_is_dense(strided) is (bad_axis is None)
    packed = (rgb[:, 0].astype(np.uint32) << 16) | (rgb[:, 1].astype(np.uint32) << 8) | rgb[:, 2]
    np.testing.assert_array_equal(once["rgb"], packed)

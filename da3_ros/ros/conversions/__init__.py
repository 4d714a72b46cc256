"""ROS message <-> numpy conversions, one module per message kind (no cv_bridge, no sensor_msgs_py).

- :mod:`.images`: sensor_msgs/Image and CompressedImage;
- :mod:`.camera_info`: sensor_msgs/CameraInfo <-> CameraIntrinsics;
- :mod:`.point_cloud`: sensor_msgs/PointCloud2;
- :mod:`.poses`: geometry_msgs Pose / Transform, quaternions;
- :mod:`.stamps`: builtin_interfaces/Time, std_msgs/Header.

The package namespace lists them all (``from da3_ros.ros import conversions as conv``). Every
reader also accepts messages deserialised by ``rosbags`` (duck typing on field names), and every
failure raises :class:`ConversionError` (a ``ValueError``) naming the problem.
"""

from da3_ros.ros.conversions.camera_info import camera_info_to_intrinsics, intrinsics_to_camera_info
from da3_ros.ros.conversions.cdr import cdr_stamp_ns
from da3_ros.ros.conversions.images import (
    IMAGE_ENCODINGS,
    compressed_to_numpy,
    depth_m_to_mm16,
    image_to_depth_m,
    image_to_numpy,
    image_to_rgb,
    mm16_to_depth_m,
    numpy_to_compressed,
    numpy_to_image,
    numpy_to_image_cdr,
)
from da3_ros.ros.conversions.point_cloud import (
    POINTFIELD_DTYPES,
    cloud_dtype,
    cloud_to_numpy,
    points_to_cloud,
    points_to_cloud_cdr,
    unpack_rgb,
)
from da3_ros.ros.conversions.poses import (
    matrix_to_pose,
    matrix_to_quaternion,
    matrix_to_transform,
    pose_to_matrix,
    quaternion_to_matrix,
)
from da3_ros.ros.conversions.stamps import NS_PER_S, make_header, ns_to_stamp, stamp_to_ns
from da3_ros.ros.errors import ConversionError

__all__ = [
    "ConversionError", "IMAGE_ENCODINGS", "NS_PER_S", "POINTFIELD_DTYPES",
    "camera_info_to_intrinsics", "cdr_stamp_ns", "cloud_dtype", "cloud_to_numpy", "compressed_to_numpy",
    "depth_m_to_mm16",
    "image_to_depth_m", "image_to_numpy", "image_to_rgb", "intrinsics_to_camera_info", "make_header",
    "matrix_to_pose", "matrix_to_quaternion", "matrix_to_transform", "mm16_to_depth_m", "ns_to_stamp",
    "numpy_to_compressed", "numpy_to_image", "numpy_to_image_cdr",
    "points_to_cloud", "points_to_cloud_cdr", "pose_to_matrix", "quaternion_to_matrix",
    "stamp_to_ns", "unpack_rgb",
]

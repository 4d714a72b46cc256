"""Publishing a serialised message from a buffer, with the GIL released while DDS takes it.

rclpy's ``Publisher.publish(bytes)`` copies the bytes into a ``std::string`` and calls
``rcl_publish_serialized_message`` while holding the GIL, so no other thread of the node runs
while Fast DDS copies the message (0.7-0.9 ms for a 640x480 32FC1 image on the 2-core machine,
bench/RESULTS.md "Publishing from a buffer"). :func:`publish_serialized` calls the same rcl
function through ``ctypes``, which releases the GIL around foreign calls, on the caller's buffer
as it lies (``bytes``, a numpy array, a view of shared memory): no copy on the Python side and
the node's other threads (image callbacks, the result receiver) run meanwhile.

rcl's C API used here (``rcl/publisher.h``, stable since ROS 2 Dashing):
``rcl_ret_t rcl_publish_serialized_message(const rcl_publisher_t *, const rcl_serialized_message_t *,
rmw_publisher_allocation_t *)``, where ``rcl_serialized_message_t`` is ``rcutils_uint8_array_t``
(buffer, length, capacity, allocator). The publisher's ``rcl_publisher_t *`` is rclpy's
``Publisher.handle.pointer``. Where any of this is missing (another client library, a test's
stand-in publisher, the bag writer's publishers), :func:`publish_serialized` calls
``publish(bytes)``: the same message, with the GIL held.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading

import numpy as np

LOG = logging.getLogger("da3_ros.ros.serialized_publish")
_RCL_RET_OK = 0


class _Allocator(ctypes.Structure):
    """``rcutils_allocator_t`` (unused by a publish: left zero)."""

    _fields_ = [("allocate", ctypes.c_void_p), ("deallocate", ctypes.c_void_p),
                ("reallocate", ctypes.c_void_p), ("zero_allocate", ctypes.c_void_p),
                ("state", ctypes.c_void_p)]


class _SerializedMessage(ctypes.Structure):
    """``rcutils_uint8_array_t`` (= ``rcl_serialized_message_t``)."""

    _fields_ = [("buffer", ctypes.c_void_p), ("buffer_length", ctypes.c_size_t),
                ("buffer_capacity", ctypes.c_size_t), ("allocator", _Allocator)]


class _ErrorString(ctypes.Structure):
    """``rcutils_error_string_t``: ``char str[RCUTILS_ERROR_MESSAGE_MAX_LENGTH]`` (1024)."""

    _fields_ = [("str", ctypes.c_char * 1024)]


def _loaded_library(stem: str) -> str | None:
    """Path of the ``<stem>.so`` this process has loaded (rclpy loads librcl), else a system one."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rsplit(None, 1)[-1]
                if os.path.basename(path).startswith(stem + ".so"):
                    return path
    except OSError:
        pass
    return ctypes.util.find_library(stem[3:])


class _Rcl:
    """The two rcl/rcutils functions, looked up once (None when not found)."""

    _lock = threading.Lock()
    _loaded = False
    publish = None
    error_string = None
    reset_error = None

    @classmethod
    def load(cls) -> None:
        with cls._lock:
            if cls._loaded:
                return
            cls._loaded = True
            try:
                rcl = ctypes.CDLL(_loaded_library("librcl") or "librcl.so")
                fn = rcl.rcl_publish_serialized_message
                fn.argtypes = [ctypes.c_void_p, ctypes.POINTER(_SerializedMessage), ctypes.c_void_p]
                fn.restype = ctypes.c_int
                cls.publish = fn
            except (OSError, AttributeError) as exc:
                LOG.info("rcl_publish_serialized_message not reachable (%s): serialised messages are "
                         "published through rclpy (GIL held)", exc)
                return
            try:
                rcutils = ctypes.CDLL(_loaded_library("librcutils") or "librcutils.so")
                cls.error_string = rcutils.rcutils_get_error_string
                cls.error_string.restype = _ErrorString
                cls.reset_error = rcutils.rcutils_reset_error
            except (OSError, AttributeError):
                pass  # errors are still raised, without rcl's text


def gil_free_available() -> bool:
    """Whether :func:`publish_serialized` can reach rcl directly in this process."""
    _Rcl.load()
    return _Rcl.publish is not None


def publish_serialized(pub, data: bytes | np.ndarray) -> None:
    """Publish the serialised message ``data`` on ``pub`` (see the module docstring).

    Args:
        pub: an rclpy ``Publisher`` or ``LifecyclePublisher`` (an inactive lifecycle publisher
            drops the message, as its ``publish`` does), or anything with ``publish(bytes)``.
        data: the whole CDR message: ``bytes`` or a C-contiguous uint8 array; read in place, it
            must stay unchanged until this returns (DDS has copied it by then).

    Raises:
        RuntimeError: rcl refused the message (the text is rcl's).
    """
    handle = getattr(pub, "handle", None)
    if not hasattr(handle, "pointer") or not gil_free_available():
        pub.publish(data if isinstance(data, bytes) else np.asarray(data).tobytes())
        return
    if not getattr(pub, "is_activated", True):
        return  # LifecyclePublisher.publish while inactive: nothing goes out
    buf = np.frombuffer(data, np.uint8) if isinstance(data, bytes) else data
    if buf.dtype != np.uint8 or not buf.flags.c_contiguous:
        raise ValueError(f"a serialised message is C-contiguous uint8, got {buf.dtype} "
                         f"(contiguous: {buf.flags.c_contiguous})")
    msg = _SerializedMessage(buf.ctypes.data, buf.nbytes, buf.nbytes, _Allocator())
    with handle:  # keeps the publisher alive during the call, as rclpy's own publish does
        ret = _Rcl.publish(handle.pointer, ctypes.byref(msg), None)
    if ret != _RCL_RET_OK:
        raise RuntimeError(f"publishing a serialised message on {pub.topic_name} failed: rcl error {ret}"
                           f"{_rcl_error()}")


def _rcl_error() -> str:
    if _Rcl.error_string is None:
        return ""
    text = _Rcl.error_string().str.decode(errors="replace")
    if _Rcl.reset_error is not None:
        _Rcl.reset_error()
    return f": {text}"

"""Environment for processes that start ROS 2 participants: DDS on loopback only.

Every test, demo and benchmark process that creates an rclpy node must run with
the package's loopback-only Fast DDS profile and its own ``ROS_DOMAIN_ID``;
:func:`loopback_env` builds that environment. No ROS import here, so it is
usable before rclpy is loaded (the profile is read when the participant starts).
"""

from __future__ import annotations

import os
from pathlib import Path

PROFILE_NAME = "fastdds_localhost.xml"


def fastdds_profile_path() -> Path:
    """Path of the loopback-only Fast DDS profile (source tree or installed share/)."""
    here = Path(__file__).resolve().parent
    candidates = [
        here.parent / "config" / PROFILE_NAME,  # source checkout / editable install
    ]
    try:  # installed as an ament package
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("da3_ros")) / "config" / PROFILE_NAME)
    except Exception:  # noqa: BLE001 - ament index absent or package not installed there
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"{PROFILE_NAME} not found in {[str(c) for c in candidates]}")


def pick_domain_id(seed: int | None = None) -> int:
    """A ROS_DOMAIN_ID in 1..100 derived from ``seed`` (default: this process id)."""
    seed = os.getpid() if seed is None else seed
    return 1 + (seed % 100)


def loopback_env(domain_id: int, base: dict[str, str] | None = None,
                 log_dir: str | None = None) -> dict[str, str]:
    """Environment for a child process whose DDS traffic stays on 127.0.0.1 / shared memory.

    Args:
        domain_id: ROS_DOMAIN_ID for the child (0..101); give each parallel run its own.
        base: environment to start from (default ``os.environ``). The ROS wheels'
            bootstrap markers are removed so the child re-executes with its own
            library path.
        log_dir: ROS_LOG_DIR for the child (keeps logs out of the home directory).
    """
    env = dict(os.environ if base is None else base)
    for key in ("_ROS_WHEELS_BOOTSTRAP_COMPLETE", "ROS_AUTOMATIC_DISCOVERY_RANGE",
                "RMW_IMPLEMENTATION", "ROS_LOCALHOST_ONLY"):
        env.pop(key, None)
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(fastdds_profile_path())
    env["ROS_DOMAIN_ID"] = str(int(domain_id))
    if log_dir is not None:
        env["ROS_LOG_DIR"] = str(log_dir)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


#: Fast DDS segments younger than this are never removed (a participant may be creating one).
SEGMENT_MIN_AGE_S = 60.0


def remove_stale_fastdds_segments(shm_dir: str = "/dev/shm", min_age_s: float = SEGMENT_MIN_AGE_S) -> int:
    """Remove the Fast DDS shared-memory segments of processes that no longer run; how many files.

    A Fast DDS participant keeps a segment ``fastdds_<id>`` (tens of MB for image traffic) and
    holds an exclusive ``flock`` on its ``fastdds_<id>_el`` file while it lives; a process killed
    (a timed-out test, SIGKILL) leaves both behind, and ``/dev/shm`` fills over many runs (13 GB
    here once). As ``fastdds shm clean`` does, a segment whose lock nobody holds is removed;
    segments younger than ``min_age_s`` are left alone.
    """
    import fcntl
    import time

    removed = 0
    try:
        names = os.listdir(shm_dir)
    except OSError:
        return 0
    for name in names:
        if not (name.startswith("fastdds_") and name.endswith("_el")):
            continue
        lock, segment = os.path.join(shm_dir, name), os.path.join(shm_dir, name[:-3])
        try:
            if time.time() - os.stat(lock).st_mtime < min_age_s:
                continue
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live participant holds it
        finally:
            os.close(fd)
        for path in (segment, lock):
            try:
                os.unlink(path)
                removed += 1
            except OSError:
                pass
    return removed

"""``da3-replay``: play a bag into the running node over DDS, record its outputs, report.

Like ``ros2 bag play`` + ``ros2 bag record`` in one: the bag's camera topics (images and
camera_info; also ``depth_gt`` / ``pose_gt`` when present, which a node running the ``truth``
stand-in needs, unless ``--images-only``) are published in real time (``--rate`` factor) as
raw CDR; everything the node publishes under ``/<node>/`` plus ``/diagnostics`` is recorded to
``--out``/recorded. Header stamps are shifted to wall-clock time (``--keep-stamps`` to send
them as recorded), so the node's own latency figures are meaningful and a ``--loop`` never
jumps back in time.

Report (``report.json``, ``summary.md``, ``latency.csv``): end-to-end latency (input publish
to receipt of the ``/<node>/<camera>/depth`` with the same stamp), output rate, inputs without
output, and the node's /diagnostics counts (received, processed, drops by reason), so every
input is accounted for. ``--loop --duration MIN`` keeps replaying and samples the node's
memory (RSS of the node process tree via /proc when its pid is known, GPU from
diagnostics) into ``memory.csv`` / ``memory.png``.

The node may be started by the tool: ``--spawn-node --params FILE`` runs
``da3_node --ros-args --params-file FILE`` (or ``--node-cmd "..."`` any command) with the
loopback-only DDS environment of :func:`da3_ros.dds_env.loopback_env`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from da3_ros.dds_env import fastdds_profile_path, pick_domain_id
from da3_ros.tools.bag.check import check_bag
from da3_ros.tools.bag.io import BagReader, BagWriter, CameraTopics, find_cameras
from da3_ros.tools.cli import run_main
from da3_ros.tools.outdir import RunOutput, size_line
from da3_ros.tools.replay.node_runner import NodeRunner
from da3_ros.tools.replay.player import Replayer
from da3_ros.tools.replay.report import build_report, write_outputs
from da3_ros.tools.replay.rig import (
    check_params_cover_bag,
    default_params_file,
    doc_params,
    rig_params,
    rig_summary,
    slop_s,
)


@dataclass
class ReplayOptions:
    """What ``da3-replay`` does (see ``--help``)."""

    rate: float = 1.0
    loop: bool = False
    duration_min: float = 0.0
    image_topics: list[str] = field(default_factory=list)
    images_only: bool = False
    keep_stamps: bool = False
    node_name: str = "da3_node"
    spawn_node: bool = False
    params: str = ""
    node_cmd: str = ""
    node_pid: int = 0
    domain_id: int | None = None
    wait_ready_s: float = 120.0
    wait_subscribers_s: float = 10.0
    rig: bool = False
    settle_s: float = 5.0
    delay_s: float = 1.0
    sample_period_s: float = 1.0
    record: bool = True
    record_stride: int = 10
    progress: bool = True
    overwrite: bool = False
    check_bag: bool = True


def play_topics(cams: list[CameraTopics], opts: ReplayOptions) -> tuple[list[str], dict[str, str]]:
    """Topics to play and ``{image topic: camera}``."""
    topics, image_cam = [], {}
    for c in cams:
        image_cam[c.image] = c.name
        topics += [t for t in (c.image, c.camera_info) if t]
        if not opts.images_only:
            topics += [t for t in (c.depth_gt, c.pose_gt) if t]
    return topics, image_cam


def build_parser() -> argparse.ArgumentParser:
    """Command-line arguments of ``da3-replay``."""
    p = argparse.ArgumentParser(prog="da3-replay", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("bag", help="rosbag2 directory or .mcap / .db3 file")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    p.add_argument("--loop", action="store_true", help="replay until --duration has passed")
    p.add_argument("--duration", type=float, default=0.0, help="minutes to play (0: once through the bag)")
    p.add_argument("--image-topics", default="", help="comma-separated image topics (default: all cameras)")
    p.add_argument("--images-only", action="store_true", help="do not play depth_gt / pose_gt")
    p.add_argument("--keep-stamps", action="store_true", help="publish the bag's header stamps unchanged")
    p.add_argument("--node-name", default="da3_node", help="node whose /<name>/... outputs are recorded")
    p.add_argument("--spawn-node", action="store_true", help="start da3_node with --params")
    p.add_argument("--params", default="", help="params file for --spawn-node")
    p.add_argument("--node-cmd", default="", help="command that starts the node (instead of --spawn-node)")
    p.add_argument("--node-pid", type=int, default=0, help="pid of an already running node (memory samples)")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: env or derived)")
    p.add_argument("--rig", action="store_true",
                   help="map every camera of the bag (or of --image-topics) to a camera of the spawned node: "
                        "writes OUT/node_params.yaml from --params (default: the package's da3_replay.yaml) "
                        "with cameras, topics, transport and mode set, and says which topic went where")
    p.add_argument("--wait-ready", type=float, default=120.0,
                   help="seconds a spawned node may take to come up (model loading)")
    p.add_argument("--wait-subscribers", type=float, default=10.0,
                   help="seconds to wait for subscribers on the bag's image topics once the node is up "
                        "(or, for a node the tool did not start, for it to appear)")
    p.add_argument("--settle", type=float, default=5.0, help="seconds without new outputs that end a run")
    p.add_argument("--delay", type=float, default=1.0, help="seconds from node ready to playing")
    p.add_argument("--sample-period", type=float, default=1.0, help="memory sampling period, s")
    p.add_argument("--no-record", action="store_true", help="do not write the recorded bag")
    p.add_argument("--record-stride", type=int, default=10,
                   help="record every N-th message of each image / cloud topic (zstd mcap; poses, odometry, "
                        "camera_info and diagnostics all; latency counts every output); 1: all")
    p.add_argument("--no-check", action="store_true",
                   help="skip reading the whole bag once before playing (chunk CRCs, message counts)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the output of an earlier run in --out (else a non-empty --out is refused)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def options_from_args(a: argparse.Namespace) -> ReplayOptions:
    """ReplayOptions from parsed arguments (ValueError on inconsistent ones)."""
    if a.rate <= 0:
        raise ValueError("--rate must be > 0")
    if a.loop and a.duration <= 0:
        raise ValueError("--loop needs --duration MIN > 0")
    if a.spawn_node and not a.params and not a.rig:
        raise ValueError("--spawn-node needs --params FILE (or --rig)")
    if a.rig and not a.spawn_node:
        raise ValueError("--rig writes the params of the node it starts: use it with --spawn-node")
    if a.wait_subscribers <= 0 or a.wait_ready <= 0:
        raise ValueError("--wait-ready and --wait-subscribers must be > 0")
    if a.record_stride < 1:
        raise ValueError("--record-stride must be >= 1")
    if a.params and not Path(a.params).is_file():
        raise ValueError(f"params file not found: {a.params}")
    return ReplayOptions(rate=a.rate, loop=a.loop, duration_min=a.duration,
                         image_topics=[t for t in a.image_topics.split(",") if t], images_only=a.images_only,
                         keep_stamps=a.keep_stamps, node_name=a.node_name, spawn_node=a.spawn_node,
                         params=a.params, node_cmd=a.node_cmd, node_pid=a.node_pid, domain_id=a.domain_id,
                         wait_ready_s=a.wait_ready, wait_subscribers_s=a.wait_subscribers, rig=a.rig,
                         settle_s=a.settle, delay_s=a.delay,
                         sample_period_s=a.sample_period, record=not a.no_record,
                         record_stride=a.record_stride, progress=not a.quiet, overwrite=a.overwrite,
                         check_bag=not a.no_check)


def prepare_dds(domain_id: int | None) -> int:
    """Loopback-only DDS for this process (unless a profile is already set); returns the domain id."""
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(fastdds_profile_path()))
    os.environ.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)
    if domain_id is None:
        domain_id = int(os.environ.get("ROS_DOMAIN_ID", pick_domain_id()))
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    return domain_id


def node_command(opts: ReplayOptions, params: str = "") -> list[str] | None:
    """The command that starts the node (with ``params``, default ``opts.params``), or None when it runs."""
    if opts.node_cmd:
        return shlex.split(opts.node_cmd)
    if opts.spawn_node:
        exe = Path(sys.executable).parent / "da3_node"
        return [str(exe if exe.exists() else "da3_node"), "--ros-args", "--params-file",
                params or opts.params]
    return None


def node_params(cams: list[CameraTopics], opts: ReplayOptions,
                stamps: dict[str, list[int]] | None) -> dict | None:
    """The params document of a ``--rig`` node (its mapping printed), else None.

    Without ``--rig``, a ``--spawn-node`` params file is checked first: it must subscribe the node to
    the bag's image topics (ToolError if not), so a wrong file fails before the node starts.
    """
    if opts.rig:
        doc = rig_params(cams, opts.params or default_params_file())
        print(f"da3-replay: {rig_summary(cams, stamps, slop_s(doc_params(doc)))}", flush=True)
        return doc
    if opts.spawn_node:
        check_params_cover_bag(opts.params, [c.image for c in cams])
    return None


def replay(bag: str | Path, out_dir: str | Path, opts: ReplayOptions) -> dict:
    """Play, record, account; returns the report written to ``out_dir/report.json``.

    ``out_dir`` must be new or empty unless ``opts.overwrite``; a run that fails after writing
    output leaves it marked ``PARTIAL`` and raises a PartialOutputError naming it.
    """
    output = RunOutput(out_dir, "da3-replay", opts.overwrite)
    out = output.path
    with BagReader(bag) as reader:
        cams = find_cameras(reader, opts.image_topics)
        topics, image_cam = play_topics(cams, opts)
        stamps = None
        if opts.check_bag:
            checked = check_bag(reader, list(image_cam))
            stamps = checked.stamps
            if opts.progress:
                print(f"da3-replay: checked {bag}: {checked.line()}", file=sys.stderr)
        params_doc = node_params(cams, opts, stamps)
        domain = prepare_dds(opts.domain_id)
        with output.running():
            params = ""
            if params_doc is not None:
                params = str(out / "node_params.yaml")
                Path(params).write_text(yaml.safe_dump(params_doc, sort_keys=False))
            cmd = node_command(opts, params)
            writer = (BagWriter(out / "recorded", fmt="mcap", compress=True, overwrite=True,
                                heavy_every=opts.record_stride) if opts.record else None)
            run = node = None
            try:
                node = NodeRunner(cmd, domain, out) if cmd else None
                run = Replayer(reader, topics, image_cam, opts, writer, node)
                run.wait_ready()
                sampler = threading.Thread(target=run.sample_memory, daemon=True)
                sampler.start()
                run.play()
                run.settle()
                run.stop_sampling.set()
                sampler.join(timeout=5)
            finally:
                if run is not None:
                    run.close()
                if writer is not None:
                    writer.close()
                node_code = node.stop() if node is not None else None
            report = build_report(run, bag=str(bag), node_exit_code=node_code)
            write_outputs(out, report, run)
    return report


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``da3-replay``."""
    args = build_parser().parse_args(argv)

    def work() -> int:
        r = replay(args.bag, args.out, options_from_args(args))
        lat = r["latency_ms"]
        print(f"played {r['inputs']} images, {r['outputs_matched']} with output "
              f"({r['inputs_without_output']} without); latency mean {lat['mean']:.1f} ms "
              f"p90 {lat['p90']:.1f} ms; output {r['output_rate_hz']:.2f} Hz; node drops "
              f"{r['node'].get('drops_total', 'n/a')}; all accounted: {r['all_accounted']} -> {args.out}")
        print(f"wrote {size_line(RunOutput(args.out, 'da3-replay').sizes())} to {args.out}")
        return 0 if r["all_accounted"] else 3

    return run_main(work, "da3-replay", args.debug)


if __name__ == "__main__":
    sys.exit(main())

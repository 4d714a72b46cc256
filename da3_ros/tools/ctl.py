"""``da3-ctl``: read and set da3_node's parameters and lifecycle state without the ros2 CLI.

The PyPI venv has no ``ros2`` command (ros2cli is not on PyPI), so ``ros2 param set`` and
``ros2 lifecycle set`` are not there. This does the same through the node's standard services
(``rcl_interfaces`` parameters, ``lifecycle_msgs`` states)::

    da3-ctl param get /da3_node conf_threshold fixed_frame
    da3-ctl param set /da3_node conf_threshold 1.5 publish.points false
    da3-ctl param list /da3_node
    da3-ctl lifecycle get /da3_node
    da3-ctl lifecycle set /da3_node deactivate     # configure activate deactivate cleanup shutdown

(``python -m da3_ros.tools.ctl ...`` works without the console script.) Run it with the node's
``ROS_DOMAIN_ID`` and ``FASTDDS_DEFAULT_PROFILES_FILE``. Values are YAML as on the command line,
except that a string parameter gets the text exactly as typed (``fixed_frame no`` is ``"no"``).
Parameters read at configure (``restart`` in ``param describe``) are accepted only while the
node is unconfigured: ``lifecycle set deactivate``, ``cleanup``, set them, ``configure``,
``activate``. Exit code 0 when every request succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import threading

import rclpy
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import GetParameters, ListParameters, SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter, get_parameter_value, parameter_value_to_python
from rclpy.signals import SignalHandlerOptions

from da3_ros.ros.parameters import spec_for
from da3_ros.tools.cli import ToolError, run_main


class NodeClient:
    """Parameter and lifecycle service calls to the node ``target`` (e.g. ``/da3_node``) from ``node``.

    ``node`` must be spun by an executor of its own (another thread); calls wait for the reply.
    """

    def __init__(self, node, target: str, timeout_s: float = 10.0) -> None:
        self.node, self.target, self.timeout_s = node, target.rstrip("/"), timeout_s

    def _call(self, srv_type, suffix: str, request):
        client = self.node.create_client(srv_type, f"{self.target}/{suffix}")
        try:
            if not client.wait_for_service(timeout_sec=self.timeout_s):
                raise ToolError(f"no {self.target}/{suffix} service within {self.timeout_s:.0f} s "
                                "(is the node running, with the same ROS_DOMAIN_ID and DDS profile?)")
            done = threading.Event()
            future = client.call_async(request)
            future.add_done_callback(lambda _f: done.set())
            if not done.wait(self.timeout_s):
                raise ToolError(f"{self.target}/{suffix} did not answer within {self.timeout_s:.0f} s")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def get(self, names: list[str]) -> dict:
        """``{name: value}`` (plain Python values; None for a parameter the node does not have)."""
        reply = self._call(GetParameters, "get_parameters", GetParameters.Request(names=list(names)))
        return {n: (None if v.type == ParameterType.PARAMETER_NOT_SET else parameter_value_to_python(v))
                for n, v in zip(names, reply.values)}

    def list(self) -> list[str]:
        """The names of every declared parameter, sorted."""
        return sorted(self._call(ListParameters, "list_parameters", ListParameters.Request()).result.names)

    def set(self, values: dict) -> list[tuple[str, bool, str]]:
        """Set each ``{name: value}``; ``[(name, successful, reason)]`` in order."""
        params = [ParameterMsg(name=n, value=to_parameter_value(n, v)) for n, v in values.items()]
        reply = self._call(SetParameters, "set_parameters", SetParameters.Request(parameters=params))
        return [(p.name, r.successful, r.reason) for p, r in zip(params, reply.results)]

    def state(self) -> str:
        """The lifecycle state's label (``unconfigured``, ``inactive``, ``active``, ...)."""
        return self._call(GetState, "get_state", GetState.Request()).current_state.label

    def transition(self, label: str) -> bool:
        """Trigger the transition ``label`` (configure, activate, ...); True when it succeeded."""
        request = ChangeState.Request(transition=Transition(label=label))
        return bool(self._call(ChangeState, "change_state", request).success)


def to_parameter_value(name: str, value) -> ParameterValue:
    """A ParameterValue for ``value``: a string parameter's text as is, anything else YAML-parsed.

    ``value`` may already be a Python value (library use) or command-line text.
    """
    spec = spec_for(name)
    is_text = spec is not None and spec.array_of is None and isinstance(spec.default, str)
    if isinstance(value, str) and is_text:
        return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
    if isinstance(value, str):
        return get_parameter_value(value)
    return Parameter(name, value=value).get_parameter_value()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="da3-ctl", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the node")
    p.add_argument("--debug", action="store_true", help="tracebacks instead of one-line errors")
    sub = p.add_subparsers(dest="group", required=True)
    param = sub.add_parser("param", help="get, set or list parameters").add_subparsers(
        dest="verb", required=True)
    get = param.add_parser("get")
    get.add_argument("node")
    get.add_argument("names", nargs="+")
    set_ = param.add_parser("set")
    set_.add_argument("node")
    set_.add_argument("pairs", nargs="+", metavar="NAME VALUE")
    param.add_parser("list").add_argument("node")
    life = sub.add_parser("lifecycle", help="get or change the lifecycle state").add_subparsers(
        dest="verb", required=True)
    life.add_parser("get").add_argument("node")
    change = life.add_parser("set")
    change.add_argument("node")
    change.add_argument("transition", choices=("configure", "activate", "deactivate", "cleanup", "shutdown"))
    return p


def _run(args, client: NodeClient) -> int:
    if args.group == "lifecycle" and args.verb == "get":
        print(client.state())
        return 0
    if args.group == "lifecycle":
        ok = client.transition(args.transition)
        print(f"{args.transition}: {'done' if ok else 'failed'}; now {client.state()}")
        return 0 if ok else 1
    if args.verb == "list":
        print("\n".join(client.list()))
        return 0
    if args.verb == "get":
        for name, value in client.get(args.names).items():
            print(f"{name}: {value!r}" if value is not None else f"{name}: (not declared)")
        return 0
    if len(args.pairs) % 2:
        raise ToolError("param set takes NAME VALUE pairs")
    results = client.set(dict(zip(args.pairs[::2], args.pairs[1::2])))
    for name, ok, reason in results:
        print(f"{name}: {'set' if ok else 'refused: ' + reason}")
    return 0 if all(ok for _, ok, _ in results) else 1


def main(argv: list[str] | None = None) -> int:
    """Console script ``da3-ctl``."""
    args = _parser().parse_args(argv)

    def work() -> int:
        context = rclpy.Context()
        rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
        node = rclpy.create_node("da3_ctl", context=context, start_parameter_services=False)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        try:
            return _run(args, NodeClient(node, args.node, args.timeout))
        finally:
            executor.shutdown()
            spinner.join(timeout=5.0)
            node.destroy_node()
            rclpy.try_shutdown(context=context)

    return run_main(work, "da3-ctl", args.debug)


if __name__ == "__main__":
    sys.exit(main())

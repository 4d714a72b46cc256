"""What the node does with its parameter table: declare, read, coerce, validate, report.

The table itself (names, types, defaults, ranges, which are dynamic) and the value checks live
in :mod:`da3_ros.ros.parameters`; the YAML-typing rules in :mod:`da3_ros.ros.overrides`.

- :func:`declare_all` declares every parameter with its descriptor; params-file and ``-p``
  values are coerced to the declared type first (:func:`declare_spec`), and the per-camera
  parameters of cameras added while unconfigured are declared at configure
  (:func:`read_settings`);
- :func:`coercing_callback` (pre-set) does the same for values set at run time;
- :func:`validation_callback` (on-set) refuses invalid values with a reason, and restart
  parameters unless the node is unconfigured;
- :func:`unknown_parameter_warnings` names the overrides the node will never read.
"""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.parameter import Parameter

from da3_ros.ros.overrides import ParameterTypeError, coerce_override, unknown_override_warnings
from da3_ros.ros.parameters import (
    CAMERA_SPECS,
    SPECS,
    CameraSettings,
    NodeSettings,
    ParamSpec,
    camera_param,
    check_values,
    needs_restart,
    plain_value,
    spec_for,
)

#: How an array parameter whose value is ``[]`` is declared: typed, with no value (read as None).
_EMPTY_ARRAY = {str: Parameter.Type.STRING_ARRAY, int: Parameter.Type.INTEGER_ARRAY,
                float: Parameter.Type.DOUBLE_ARRAY}


def overrides_of(node) -> dict:
    """The parameter overrides (params files, ``-p``) rclpy holds for ``node``, by name.

    rclpy keeps them in ``Node._parameter_overrides`` and has no public getter; the node needs
    them to coerce values before declaring and to name the ones it does not know.
    """
    return getattr(node, "_parameter_overrides", {})


def declare_spec(node, spec: ParamSpec, name: str | None = None, default: Any = None) -> None:
    """Declare one parameter with its descriptor; an override is coerced to its type first.

    Raises:
        ParameterTypeError: the override cannot be read as the parameter's type (the message
            says how to write it).
    """
    name = name or spec.name
    value = spec.default if default is None else default
    override = overrides_of(node).get(name)
    if override is not None:
        value = coerce_override(spec, override.value, name)
    if value == [] and spec.array_of is not None:  # an empty list has no type: declare typed and unset
        value = _EMPTY_ARRAY[spec.array_of]
    descriptor = spec.descriptor()
    descriptor.name = name
    node.declare_parameter(name, value, descriptor, ignore_override=True)


def declare_all(node) -> None:
    """Declare every node-wide and per-camera parameter on ``node`` (params-file values apply).

    Raises:
        ValueError: an override of the wrong type (:class:`ParameterTypeError`), or an invalid
            ``cameras`` list (per-camera names could not be declared).
    """
    for spec in SPECS:
        declare_spec(node, spec)
    declare_cameras(node)


def declare_cameras(node) -> None:
    """Declare the ``camera.<name>.*`` parameters of every camera in ``cameras`` not declared yet.

    At start-up, and at configure for cameras added while unconfigured.

    Raises:
        ValueError: the ``cameras`` list is invalid.
    """
    cameras = plain_value(node.get_parameter("cameras").value) or []
    reason = check_values({"cameras": cameras})
    if reason:
        raise ValueError(f"invalid parameters: {reason}")
    for cam in cameras:
        for spec in CAMERA_SPECS:
            full = camera_param(cam, spec.name)
            if not node.has_parameter(full):
                default = spec.default.format(camera=cam) if isinstance(spec.default, str) else spec.default
                declare_spec(node, spec, full, default)


def read_settings(node) -> NodeSettings:
    """Snapshot of all declared parameters as a :class:`NodeSettings` (at configure).

    Declares the per-camera parameters of cameras added since start-up first.
    """
    declare_cameras(node)
    values = {s.name: plain_value(node.get_parameter_or(s.name).value) for s in SPECS}  # None: unset
    cams = []
    for cam in values["cameras"]:
        get = lambda k, cam=cam: node.get_parameter(camera_param(cam, k)).value  # noqa: E731
        extrinsics = node.get_parameter_or(camera_param(cam, "extrinsics")).value  # None when unset
        cams.append(CameraSettings(cam, get("image_topic"), get("camera_info_topic"), get("frame_id"),
                                   get("transport"), [float(x) for x in extrinsics or []]))
    return NodeSettings(values, cams)


def unknown_parameter_warnings(node) -> list[str]:
    """Warnings for the overrides ``node`` will never read, each with the closest known name."""
    values = {name: plain_value(node.get_parameter(name).value) for name in ("cameras", "model")}
    return unknown_override_warnings(overrides_of(node), node.has_parameter, [s.name for s in SPECS],
                                     values["cameras"], [s.name for s in CAMERA_SPECS], values["model"])


def coercing_callback(params: list) -> list:
    """An ``add_pre_set_parameters_callback`` callback: values set at run time in the declared type.

    ``ros2 param set /da3_node conf_threshold 1`` sends an integer; it becomes 1.0 here (the same
    rules as for overrides, :func:`~da3_ros.ros.overrides.coerce_override`). A value that cannot
    be coerced goes on unchanged, and rclpy refuses it with the type it expected.
    """
    out = []
    for p in params:
        spec = spec_for(p.name)
        try:
            value = coerce_override(spec, p.value, p.name) if spec is not None else p.value
        except ParameterTypeError:
            value = p.value
        out.append(p if value is p.value else Parameter(p.name, value=value))
    return out


def validation_callback(node, unconfigured):
    """An ``add_on_set_parameters_callback`` callback that rejects invalid changes with a reason.

    Restart parameters (see :func:`needs_restart`) change only while ``unconfigured()``; a
    declaration (the name not declared yet) is always checked for its value only.
    """

    def callback(params) -> SetParametersResult:
        restart = [p.name for p in params if needs_restart(p.name) and node.has_parameter(p.name)]
        if restart and not unconfigured():
            return SetParametersResult(successful=False, reason=(
                f"{', '.join(restart)}: read at configure; set while unconfigured (deactivate, "
                "cleanup), then configure and activate again"))
        merged = {s.name: plain_value(node.get_parameter_or(s.name).value) for s in SPECS
                  if node.has_parameter(s.name)}
        merged.update({p.name: plain_value(p.value) for p in params})
        reason = check_values(merged, names=[p.name for p in params])
        return SetParametersResult(successful=reason is None, reason=reason or "")

    return callback

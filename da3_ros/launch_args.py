"""Plain helpers the launch files share (no ``launch`` import, so they are testable anywhere).

Launch arguments are strings; these turn them into what ``launch_ros.actions.Node`` takes,
without ever ``eval``-ing an argument.
"""

from __future__ import annotations

from collections.abc import Callable

# Launch arguments that override the params file when non-empty.
OVERRIDABLE_PARAMETERS = ("model", "device")

# (name, default, description) of the arguments every da3 launch file declares.
NODE_ARGUMENTS = (
    ("namespace", "", "Node namespace"),
    ("node_name", "da3_node", "Node name"),
    ("remaps", "", "Remaps: 'from:=to from2:=to2'"),
    ("model", "", "Override the model: preset, weights dir or hub id ('': config)"),
    ("device", "", "Override the device ('': config)"),
    ("log_level", "info", "Node log level"),
)


def split_remaps(text: str) -> list[tuple[str, str]]:
    """``'a:=b c:=d'`` -> ``[('a', 'b'), ('c', 'd')]`` (``;`` also separates).

    Raises:
        ValueError: an item is not ``from:=to``.
    """
    pairs = []
    for item in text.replace(";", " ").split():
        src, sep, dst = item.partition(":=")
        if not sep or not src or not dst:
            raise ValueError(f"remaps: expected from:=to, got {item!r}")
        pairs.append((src, dst))
    return pairs


def parameter_overrides(value: Callable[[str], str]) -> dict[str, str]:
    """``{name: value}`` for each of :data:`OVERRIDABLE_PARAMETERS` given a non-empty launch argument."""
    return {name: value(name) for name in OVERRIDABLE_PARAMETERS if value(name)}


def node_kwargs(value: Callable[[str], str], package: str, executable: str, use_sim_time: bool,
                autostart: bool, remaps: list[tuple[str, str]] = ()) -> dict:
    """Keyword arguments of ``launch_ros.actions.Node`` for da3_node, from the shared arguments.

    Reads the ``config`` argument and :data:`NODE_ARGUMENTS` through ``value`` (a launch
    argument's string). ``remaps`` come first, then the ``remaps`` argument's pairs. Parameters:
    the params file, then ``use_sim_time`` / ``autostart``, then :func:`parameter_overrides`.
    """
    return {
        "package": package,
        "executable": executable,
        "name": value("node_name"),
        "namespace": value("namespace"),
        "output": "screen",
        "emulate_tty": True,
        "parameters": [value("config"), {"use_sim_time": use_sim_time, "autostart": autostart},
                       parameter_overrides(value)],
        "remappings": [*remaps, *split_remaps(value("remaps"))],
        "arguments": ["--ros-args", "--log-level", value("log_level")],
    }


def flatten_params(tree: dict, prefix: str = "") -> dict:
    """Nested ``ros__parameters`` dicts -> ``{"a.b.c": value}`` (lists and scalars are leaves)."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_params(value, name + "."))
        else:
            out[name] = value
    return out

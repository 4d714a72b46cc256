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

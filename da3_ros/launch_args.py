"""Plain helpers the launch files share (no ``launch`` import, so they are testable anywhere).

Launch arguments are strings; these turn them into what ``launch_ros.actions.Node`` takes,
without ever ``eval``-ing an argument.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

# Launch arguments that override the params file when non-empty.
OVERRIDABLE_PARAMETERS = ("model", "device")

# (name, default, description) of the arguments every da3 launch file declares. ``config`` has no
# default here: each launch file gives its own params file (see :func:`launch_arguments`).
NODE_ARGUMENTS = (
    ("config", None, "Parameters file; a relative path not found from the current directory "
                     "is looked up in the package's share directory"),
    ("namespace", "", "Node namespace"),
    ("node_name", "da3_node", "Node name"),
    ("use_sim_time", "false", "Use /clock for the node's time ('true' or 'false')"),
    ("autostart", "true", "Configure and activate without a lifecycle manager ('true' or 'false')"),
    ("remaps", "", "Remaps: 'from:=to from2:=to2'"),
    ("model", "", "Override the model: preset, weights dir or hub id ('': config)"),
    ("device", "", "Override the device ('': config)"),
    ("log_level", "info", "Node log level"),
)

# What launch's conditions accept (launch/conditions/evaluate_condition_expression_impl.py).
_TRUE, _FALSE = ("true", "1"), ("false", "0")


def launch_arguments(**defaults) -> list[tuple[str, object, str]]:
    """:data:`NODE_ARGUMENTS` with some defaults replaced: ``config`` must be one of them.

    A default may be a string or a ``launch`` substitution (it is handed to
    ``DeclareLaunchArgument(default_value=...)`` as is).

    Raises:
        ValueError: ``config`` is not given, or a name is not in :data:`NODE_ARGUMENTS`.
    """
    names = {name for name, _, _ in NODE_ARGUMENTS}
    if "config" not in defaults or not set(defaults) <= names:
        raise ValueError(f"launch_arguments: give config and only {sorted(names)}, "
                         f"got {sorted(defaults)}")
    return [(name, defaults.get(name, default), text) for name, default, text in NODE_ARGUMENTS]


def launch_bool(value: Callable[[str], str], name: str) -> bool:
    """A boolean launch argument, spelt as launch's conditions take it: true/1 or false/0.

    Raises:
        ValueError: any other text (a typo is never read as false).
    """
    text = value(name).strip().lower()
    if text in _TRUE + _FALSE:
        return text in _TRUE
    raise ValueError(f"launch argument {name}:={value(name)!r}: expected true/false (or 1/0)")


def resolve_path(text: str, share_dir: str | Path) -> str:
    """A path given as a launch argument, made absolute.

    An absolute path is returned as given (whatever opens it reports a missing one). A relative
    path is taken from the current directory when it exists there, else from the package's
    share directory, so ``bag:=data/room`` finds the installed sample bag from anywhere.

    Raises:
        FileNotFoundError: a relative path that exists in neither place (both are named).
    """
    path = Path(text).expanduser()
    if path.is_absolute():
        return str(path)
    for base in (Path.cwd(), Path(share_dir)):
        if (base / path).exists():
            return str((base / path).absolute())
    raise FileNotFoundError(f"{text!r} is neither in {Path.cwd()} nor in {share_dir}")


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


def node_kwargs(value: Callable[[str], str], share_dir: str | Path, package: str, executable: str,
                remaps: list[tuple[str, str]] = ()) -> dict:
    """Keyword arguments of ``launch_ros.actions.Node`` for da3_node, from the shared arguments.

    Reads :data:`NODE_ARGUMENTS` through ``value`` (a launch argument's string); ``config`` is
    resolved with :func:`resolve_path` against ``share_dir`` (the package's share directory).
    ``remaps`` come first, then the ``remaps`` argument's pairs. Parameters: the params file,
    then ``use_sim_time`` / ``autostart``, then :func:`parameter_overrides`.
    """
    return {
        "package": package,
        "executable": executable,
        "name": value("node_name"),
        "namespace": value("namespace"),
        "output": "screen",
        "emulate_tty": True,
        "parameters": [resolve_path(value("config"), share_dir),
                       {"use_sim_time": launch_bool(value, "use_sim_time"),
                        "autostart": launch_bool(value, "autostart")},
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

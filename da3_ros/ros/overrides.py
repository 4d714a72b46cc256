"""Parameter values as users type them: YAML's surprises turned into what was meant, or explained.

rcl reads every ``-p name:=value`` and every params-file value as YAML 1.1, so ``off``, ``no``,
``on``, ``yes``, ``y``, ``n``, ``true`` and ``false`` (any case) arrive as booleans, ``0`` as an
integer, and a list must hold one type (``[front, off]`` and ``[0, 10.5]`` are refused before
the node exists). A parameter declared with a type then refuses the value. Here:

- :func:`quote_cli_overrides` rewrites the ``-p`` values of string parameters on the command line
  to quoted YAML (``accelerate:=off`` -> ``accelerate:='off'``), so they arrive exactly as typed;
  float lists get float elements (``[0, 10.5]`` -> ``[0.0, 10.5]``);
- :func:`coerce_override` turns a params-file value into the declared type where the intent is
  certain: an integer for a float, ``0``/``1`` for a boolean, a number for a string (``device:
  0`` -> ``"0"``), a boolean for a string with choices that spell it one way (``accelerate: off``
  -> ``"off"``), integers for a float list, one name for a list of names; anything else is a
  :class:`ParameterTypeError` that says how to quote the value;
- :func:`unknown_override_warnings` names the overrides the node does not know, each with the
  closest known name;
- :func:`init_error_hint` explains rcl's refusal of a mixed list or bad YAML.

The specs come from :mod:`da3_ros.ros.parameters` (anything with ``name``, ``default``,
``choices`` and ``array_of``), which imports this module, never the reverse.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import yaml

#: The unquoted words YAML 1.1 (rcl's parser) reads as booleans, lower-cased.
YAML_BOOL_WORDS = {True: ("true", "yes", "on", "y"), False: ("false", "no", "off", "n")}
#: Override names that belong to rclpy, not to the node's table.
FOREIGN_PREFIXES = ("qos_overrides.",)


class ParameterTypeError(ValueError):
    """A parameter value of a type the parameter cannot take; the message says how to write it."""


def _kind(spec) -> tuple[type, bool]:
    """(element type, is a list) of a spec."""
    if spec.array_of is not None:
        return spec.array_of, True
    return type(spec.default), False


def quote_hint(name: str, example: str) -> str:
    """How to give ``name`` the text ``example`` in a params file and on the command line."""
    return f"""quote it: {name}: '{example}' in a params file, -p "{name}:='{example}'" on the command line"""


def coerce_override(spec, value: Any, name: str | None = None) -> Any:
    """``value`` (as rcl parsed it) in the type ``spec`` declares; see the module docstring.

    Args:
        spec: the parameter's spec.
        value: the value rcl parsed (params file or ``-p``), or one set at run time.
        name: the parameter's full name when it differs from ``spec.name`` (``camera.<c>.<key>``).

    Raises:
        ParameterTypeError: the value cannot be read as that type without guessing.
    """
    name = name or spec.name
    base, is_list = _kind(spec)
    if is_list:
        return _coerce_list(name, base, value)
    if base is str:
        return _coerce_str(spec, name, value)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base is bool and not isinstance(value, bool) and isinstance(value, int) and value in (0, 1):
        return bool(value)
    if value is not None and not isinstance(value, base) or (base is not bool and isinstance(value, bool)):
        raise ParameterTypeError(f"{name} takes {_type_words(base, False)}, got {value!r}")
    return value


def _coerce_str(spec, name: str, value: Any) -> Any:
    if isinstance(value, bool):
        spelled = [c for c in spec.choices if c.lower() in YAML_BOOL_WORDS[value]]
        if len(spelled) == 1:
            return spelled[0]
        words = "/".join(YAML_BOOL_WORDS[value])
        example = spelled[0] if spelled else YAML_BOOL_WORDS[value][2]
        raise ParameterTypeError(f"{name} is a string, but YAML read an unquoted {words} as the boolean "
                                 f"{str(value).lower()}; {quote_hint(name, example)}")
    if isinstance(value, int | float):
        return _number_text(value)
    if isinstance(value, str):
        return value
    raise ParameterTypeError(f"{name} takes a string, got {value!r}; {quote_hint(name, 'text')}")


def _coerce_list(name: str, base: type, value: Any) -> Any:
    if base is str and isinstance(value, str):
        return [value]  # one camera named without brackets
    if not isinstance(value, list | tuple) and not hasattr(value, "tolist"):
        raise ParameterTypeError(f"{name} takes a list of {_type_words(base, True)}, got {value!r}")
    items = list(value.tolist() if hasattr(value, "tolist") else value)
    if base is float and all(isinstance(v, int | float) and not isinstance(v, bool) for v in items):
        return [float(v) for v in items]
    if all(isinstance(v, base) and not (base is not bool and isinstance(v, bool)) for v in items):
        return items
    raise ParameterTypeError(f"{name} takes a list of {_type_words(base, True)}, got {items!r}"
                             + ("; quote names that YAML reads as booleans or numbers: ['front', 'off']"
                                if base is str else ""))


def _type_words(base: type, plural: bool) -> str:
    words = {bool: ("a boolean", "booleans"), int: ("an integer", "integers"),
             float: ("a number", "numbers"), str: ("a string", "strings")}[base]
    return words[plural]


def _number_text(value: int | float) -> str:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 1e16:
        return repr(value)
    return str(value)


# ------------------------------------------------------------------ command line
def quote_cli_overrides(argv: Sequence[str], spec_for: Callable[[str], Any]) -> list[str]:
    """``argv`` with the ``-p`` / ``--param`` values of string and float-list parameters quoted.

    Only ROS arguments (``--ros-args`` up to ``--``) are touched; a value already quoted, or of a
    parameter ``spec_for(name)`` does not know (None), is left alone. ``name`` may carry a node
    prefix (``da3_node:accelerate:=off``).
    """
    out, in_ros, expect_param = [], False, False
    for arg in argv:
        if expect_param:
            out.append(_quote_rule(arg, spec_for))
            expect_param = False
            continue
        out.append(arg)
        if arg == "--ros-args":
            in_ros = True
        elif arg == "--":
            in_ros = False
        elif in_ros and arg in ("-p", "--param"):
            expect_param = True
    return out


def _quote_rule(rule: str, spec_for: Callable[[str], Any]) -> str:
    target, sep, text = rule.partition(":=")
    spec = spec_for(target.rsplit(":", 1)[-1]) if sep else None
    if spec is None:
        return rule
    base, is_list = _kind(spec)
    stripped = text.strip()
    if base is str and not is_list and not _quoted(stripped):
        return f"{target}:={_yaml_quote(stripped)}"
    if is_list and base in (str, float) and stripped.startswith("[") and stripped.endswith("]"):
        items = [item.strip() for item in stripped[1:-1].split(",")] if stripped[1:-1].strip() else []
        if base is str:
            items = [item if _quoted(item) else _yaml_quote(item) for item in items]
        else:
            items = [_float_text(item) for item in items]
        return f"{target}:=[{', '.join(items)}]"
    return rule


def _quoted(text: str) -> bool:
    return len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""


def _yaml_quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _float_text(item: str) -> str:
    try:
        value = yaml.safe_load(item)
    except yaml.YAMLError:
        return item
    if isinstance(value, int) and not isinstance(value, bool):
        return repr(float(value))
    return item


def init_error_hint(message: str) -> str:
    """A line of advice for rcl's refusal of the ROS arguments (``message``), or ''."""
    if "Sequence should be of same type" in message:
        return ("a list must hold one type: quote names that YAML reads as booleans or numbers "
                "(['front', 'off']) and write numbers of a float list as floats ([0.0, 10.5])")
    if "parameter" in message.lower() or "yaml" in message.lower():
        return "check the -p name:=value rules and the params file (YAML) named in the message"
    return ""


# ------------------------------------------------------------------ unknown names
def unknown_override_warnings(overrides: Iterable[str], declared: Callable[[str], bool],
                              known: Sequence[str], cameras: Sequence[str], camera_keys: Sequence[str],
                              model: str, truth_prefix: str = "truth.") -> list[str]:
    """One warning per override name the node will never read, with the closest known name.

    Args:
        overrides: names given by params files and ``-p``.
        declared: whether the node declared a name.
        known: the node-wide parameter names (the suggestions).
        cameras: the ``cameras`` list.
        camera_keys: the per-camera setting names (``image_topic``, ...).
        model: the ``model`` value (``truth.*`` are read only with ``truth``, at activation).
        truth_prefix: the prefix of the test aid's parameters.
    """
    out = []
    for name in sorted(overrides):
        if declared(name) or name.startswith(FOREIGN_PREFIXES):
            continue
        if name.startswith(truth_prefix):
            if model != "truth":
                out.append(f"parameter {name} is ignored: truth.* are read only with model 'truth' "
                           "(a test aid)")
            continue
        parts = name.split(".")
        if parts[0] == "camera" and len(parts) == 3 and parts[1] not in cameras:
            out.append(f"parameter {name} is ignored: {parts[1]!r} is not in cameras {list(cameras)}"
                       + closest_hint(parts[1], cameras, "camera"))
        elif parts[0] == "camera" and len(parts) == 3:
            out.append(f"unknown parameter {name} (ignored)" + closest_hint(parts[2], camera_keys, "",
                                                                          f"camera.{parts[1]}."))
        else:
            out.append(f"unknown parameter {name} (ignored)" + closest_hint(name, known, ""))
    return out


def closest_hint(name: str, candidates: Sequence[str], what: str = "", prefix: str = "") -> str:
    """``'; did you mean <what> <prefix><closest candidate>?'``, or '' when nothing is close."""
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    if not match:
        return ""
    return f"; did you mean {what + ' ' if what else ''}{prefix}{match[0]}?"

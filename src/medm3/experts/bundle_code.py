"""Which MONAI bundle ``network_def`` entries may be built without trusting the bundle.

A bundle's ``configs/inference.json`` is a MONAI config: strings starting with
``$`` are Python expressions that :class:`monai.bundle.ConfigParser` evaluates
with ``eval``. Checkpoints are loaded with ``weights_only=True``, so building
the network would be the only way for a downloaded ``--weights`` folder to run
code. Before a network is built, :func:`check_network_def` therefore accepts
only what a released bundle needs:

* a component definition whose every ``_target_`` (nested ones included) is a
  class or function of :mod:`monai.networks.nets` (``SegResNet``,
  ``monai.networks.nets.vista3d.VISTA3D``, ...), whose other values are plain
  JSON or ``@name`` references to plain config values;
* the expression form of the released VISTA3D bundle,
  ``$monai.networks.nets.vista3d132(encoder_embed_dim=48, in_channels=@input_channels)``:
  one call of such a constructor with literal or ``@name`` arguments.

Anything else (``$__import__('os').system(...)``, ``%`` macros pulling in
other files, targets outside :mod:`monai.networks.nets`) is refused with
:class:`BundleCodeError` unless the user trusts the bundle: ``--trust-bundle-code``
on the command line, which sets ``MEDM3_TRUST_BUNDLE_CODE=1``.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medm3.errors import InputError

#: Environment variable that trusts every bundle's code (set by ``--trust-bundle-code``).
TRUST_ENV = "MEDM3_TRUST_BUNDLE_CODE"
#: Module whose constructors are accepted.
NETS_MODULE = "monai.networks.nets"

_REF = re.compile(r"@([A-Za-z_][A-Za-z0-9_]*)")


class BundleCodeError(InputError):
    """A bundle's ``network_def`` holds code that is not a known network constructor."""


def trust_bundle_code() -> bool:
    """Whether the user trusts bundle code (``MEDM3_TRUST_BUNDLE_CODE`` set to 1/true/yes)."""
    return os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def check_network_def(config: Mapping[str, Any], config_path: str | os.PathLike[str]) -> None:
    """Refuse a ``network_def`` that is more than a known network constructor.

    Args:
        config: The parsed ``inference.json``.
        config_path: Its path (named in the message).

    Raises:
        BundleCodeError: The definition holds other code and the bundle is not trusted.
    """
    if trust_bundle_code() or "network_def" not in config:
        return
    problem = _problem(config.get("network_def"), config, depth=0)
    if problem is not None:
        raise BundleCodeError(
            f"network_def holds code that is not a known network constructor ({problem}); "
            "refusing to run it. If you trust this bundle, pass --trust-bundle-code "
            f"(or set {TRUST_ENV}=1)",
            Path(config_path),
        )


def _is_net_target(target: str) -> bool:
    """Whether ``target`` names a network of MONAI (``SegResNet``, ``...nets.vista3d.VISTA3D``)."""
    import importlib

    name = target.removeprefix(NETS_MODULE + ".")
    parts = name.split(".")
    if not all(p.isidentifier() and not p.startswith("_") for p in parts):
        return False
    module_path = NETS_MODULE + ("." + ".".join(parts[:-1]) if len(parts) > 1 else "")
    if len(parts) > 1 and target == name:
        return False  # a dotted target outside monai.networks.nets
    try:
        module = importlib.import_module(module_path)
    except ImportError:
        return False
    obj = getattr(module, parts[-1], None)
    if obj is None:  # fully qualified: a missing name fails to build and runs nothing
        return target != name
    # Only MONAI's own network classes/factories, not helpers a module imported (torch.load).
    return callable(obj) and str(getattr(obj, "__module__", "")).startswith("monai.networks")


def _problem(value: Any, config: Mapping[str, Any], depth: int) -> str | None:
    if depth > 20:
        return "nested too deeply"
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key == "_target_":
                if not isinstance(item, str) or not _is_net_target(item):
                    return f"_target_ {item!r} is not in {NETS_MODULE}"
            elif str(key).startswith("_"):
                return f"the key {key!r} is not allowed"
            elif (found := _problem(item, config, depth + 1)) is not None:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for item in value:
            if (found := _problem(item, config, depth + 1)) is not None:
                return found
        return None
    if isinstance(value, str):
        if value.startswith("%"):
            return f"macro {value!r}"
        if value.startswith("@"):
            return _reference_problem(value[1:], config, depth)
        if value.startswith("$"):
            return _expression_problem(value[1:], config, depth)
    return None


def _reference_problem(name: str, config: Mapping[str, Any], depth: int) -> str | None:
    if not name.isidentifier() or name not in config:
        return f"reference @{name}"
    target = config[name]
    if _is_plain(target):
        return None
    return _problem(target, config, depth + 1) if isinstance(target, Mapping) else f"@{name}"


def _is_plain(value: Any) -> bool:
    if isinstance(value, str):
        return not value.startswith(("$", "@", "%"))
    if isinstance(value, Mapping):
        return all(_is_plain(v) and not str(k).startswith("_") for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float))


def _expression_problem(text: str, config: Mapping[str, Any], depth: int) -> str | None:
    refs = _REF.findall(text)
    source = _REF.sub(lambda m: f"__ref_{m.group(1)}", text)
    shown = text if len(text) <= 60 else text[:57] + "..."
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError:
        return f"expression {shown!r}"
    call = tree.body
    if not isinstance(call, ast.Call) or not _is_net_target(_dotted(call.func) or ""):
        return f"expression {shown!r}"
    if not (_dotted(call.func) or "").startswith(NETS_MODULE + "."):
        return f"expression {shown!r}"
    for arg in [*call.args, *(k.value for k in call.keywords)]:
        if isinstance(arg, ast.Name) and arg.id.startswith("__ref_"):
            continue
        try:
            ast.literal_eval(arg)
        except ValueError:
            return f"expression {shown!r}"
    if any(k.arg is None for k in call.keywords):
        return f"expression {shown!r}"
    for name in refs:
        if (found := _reference_problem(name, config, depth + 1)) is not None:
            return found
    return None


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))

"""Importing a ``package.module:factory`` given by name (a model or a data set from code)."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["import_factory"]


def import_factory(spec: str, *, what: str = "model") -> Any:
    """The callable that ``spec`` (``"package.module:factory"``) names.

    The module is imported from :data:`sys.path` as it is (this function never changes it; the
    ``risloss`` command line puts the working folder there, as Python does for a script).
    ``factory`` may be a dotted path inside the module (``"pkg.mod:Class.build"``).

    Args:
        spec: ``"package.module:factory"``.
        what: what the factory makes, as the error messages name it (``"model"``, ``"data"``).

    Returns:
        The callable.

    Raises:
        ValueError: a malformed ``spec``, a module that cannot be imported, a missing attribute
            or an attribute that is not callable (one line, naming ``spec``).
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{what} must be given as 'package.module:factory', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"{what} {spec!r}: cannot import module {module_name!r} ({exc})") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{what} {spec!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{what} {spec!r}: {attr!r} is not callable")
    return obj

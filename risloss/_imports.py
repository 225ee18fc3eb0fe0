"""Importing a ``package.module:factory`` given by name (a model or a data set from code)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

__all__ = ["call_factory", "import_factory"]


def _import_file(path: str, spec: str, what: str) -> Any:
    """The module in the Python file ``path`` (``./mymodels.py``), imported under its stem."""
    file = Path(path)
    if file.suffix != ".py":
        raise ValueError(
            f"{what} {spec!r}: {path!r} is not a Python file (.py); give a file "
            "'path/to/file.py:factory' or a module 'package.module:factory'"
        )
    if not file.is_file():
        raise ValueError(f"{what} {spec!r}: no Python file {path!r}")
    name = f"_risloss_user_{file.stem}"
    loader_spec = importlib.util.spec_from_file_location(name, file)
    if loader_spec is None or loader_spec.loader is None:
        raise ValueError(f"{what} {spec!r}: cannot import {path!r}")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module  # the module's own classes must be found by name (dataclasses)
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ValueError(
            f"{what} {spec!r}: importing {path!r} raised {type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    return module


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().split("\n", 1)[0]
    return text[:200] or "(no message)"


def call_factory(factory: Any, spec: str, *args: Any, what: str = "model") -> Any:
    """``factory(*args)``; an exception it raises (``SystemExit`` included) becomes one
    line naming ``spec``, with the factory's own error chained (``--debug`` shows it).

    Raises:
        ValueError: the factory raised, or exited.

    Example:
        >>> from risloss._imports import call_factory
        >>> call_factory(lambda: 1 / 0, "m:f")
        Traceback (most recent call last):
        ...
        ValueError: model 'm:f': the factory raised ZeroDivisionError: division by zero
    """
    try:
        return factory(*args)
    except (Exception, SystemExit) as exc:
        if isinstance(exc, SystemExit):
            detail = f"exited (SystemExit {exc.code!r}) instead of returning a {what}"
        else:
            detail = f"raised {type(exc).__name__}: {_first_line(exc)}"
        raise ValueError(f"{what} {spec!r}: the factory {detail}") from exc


def import_factory(spec: str, *, what: str = "model") -> Any:
    """The callable that ``spec`` (``"package.module:factory"``) names.

    The module is imported from :data:`sys.path` as it is (this function never changes it; the
    ``risloss`` command line puts the working folder there, as Python does for a script).
    ``factory`` may be a dotted path inside the module (``"pkg.mod:Class.build"``). The module
    may also be a Python file, ``"path/to/file.py:factory"`` (``./mymodels.py:good``).

    Args:
        spec: ``"package.module:factory"``.
        what: what the factory makes, as the error messages name it (``"model"``, ``"data"``).

    Returns:
        The callable.

    Raises:
        ValueError: a malformed ``spec``, a module that cannot be imported, a missing attribute
            or an attribute that is not callable (one line, naming ``spec``).
    """
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise ValueError(f"{what} must be given as 'package.module:factory', got {spec!r}")
    if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
        module = _import_file(module_name, spec, what)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(
                f"{what} {spec!r}: cannot import module {module_name!r} ({exc})"
            ) from exc
        except Exception as exc:  # the module itself fails as it runs
            raise ValueError(
                f"{what} {spec!r}: importing {module_name!r} raised {type(exc).__name__}: "
                f"{_first_line(exc)}"
            ) from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{what} {spec!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{what} {spec!r}: {attr!r} is not callable")
    return obj

"""Extensions from outside the package: modules that register methods, formats or model families.

* ``import_plugins(["my_pkg.my_method"])`` imports each module; at import it calls
  ``register_method`` / ``register_format`` / ``register_family``. The command line's
  ``--import MODULE`` does the same.
* An installed package may declare entry points in the group ``tenpeft.plugins`` (``[project.entry-points
  ."tenpeft.plugins"] my_method = "my_pkg.my_method"``; a ``module:function`` value is called with
  no argument after import). They are loaded once, lazily: the first time a method, format or
  family name is looked up and not found (``get_method``, ``get_format``, ``discover``), so an
  installed plugin costs nothing until needed. ``load_entry_points()`` loads them at once (the
  command line does so for ``--method all``).
* A saved adapter records the modules outside tenpeft that its method, formats and update classes
  come from (``plugins`` in the adapter config); loading it where one is missing names the module
  to import. Nothing named in a saved file is imported automatically: importing runs code.
"""
from __future__ import annotations

import importlib
import inspect
from importlib.metadata import entry_points
from typing import Iterable, Mapping

from .errors import TenpeftError

ENTRY_POINT_GROUP = "tenpeft.plugins"
_loaded: set[tuple[str, str]] = set()  # entry points (name, value) loaded in this process
_scanned = False  # every entry point of the group has been loaded


def import_plugins(modules: Iterable[str] | None) -> list[str]:
    """Import each module of ``modules`` (None: none), in order; returns the names imported (each
    once). A name that is not a module name, or a module that cannot be imported, raises a
    TenpeftError naming the module and the ImportError."""
    imported: list[str] = []
    for name in modules or ():
        if not isinstance(name, str) or not all(part.isidentifier() for part in name.split(".")):
            raise TenpeftError(f"plugin {name!r} is not a module name; give a dotted name such as my_pkg.my_method")
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise TenpeftError(f"cannot import plugin module {name!r} ({type(err).__name__}: {err}); check the "
                               f"name and that its folder is on PYTHONPATH or its package installed") from None
        if name not in imported:
            imported.append(name)
    return imported


def load_entry_points() -> list[str]:
    """Load every entry point of the group ``tenpeft.plugins`` not loaded yet (each once per process);
    returns the names of those loaded now. A failing one raises a TenpeftError naming it."""
    global _scanned
    if _scanned:
        return []
    loaded = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        key = (point.name, point.value)
        if key in _loaded:
            continue
        try:
            target = point.load()
            if inspect.isfunction(target):
                target()
        except Exception as err:  # a broken plugin: say which, whatever it raised
            raise TenpeftError(f"entry point {point.name!r} = {point.value!r} (group {ENTRY_POINT_GROUP!r}) failed to "
                               f"load ({type(err).__name__}: {err}); fix or uninstall the package that declares "
                               f"it") from None
        _loaded.add(key)
        loaded.append(point.name)
    _scanned = True
    return loaded


def lookup(registry: Mapping, name):
    """``registry[name]``, loading the entry points first if ``name`` is not registered; None if it is
    still not (or ``name`` cannot be a key)."""
    try:
        if name in registry:
            return registry[name]
    except TypeError:  # an unhashable name
        return None
    if name is None:
        return None
    load_entry_points()
    return registry.get(name)


def import_hint(modules: list[str]) -> str:
    """How to import ``modules`` before loading: from Python and on the command line."""
    flags = " ".join(f"--import {m}" for m in modules)
    return f"tenpeft.plugins.import_plugins({list(modules)!r}) or {flags}"


def defining_modules(objects: Iterable) -> list[str]:
    """The modules outside tenpeft that define ``objects`` (classes and functions), each once, in order;
    ``__main__`` is left out (another process cannot import it)."""
    found: list[str] = []
    for obj in objects:
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        module = getattr(obj, "__module__", None) or ""
        if module and module != "__main__" and module != "tenpeft" and not module.startswith("tenpeft."):
            if module not in found:
                found.append(module)
    return found

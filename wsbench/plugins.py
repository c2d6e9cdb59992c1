"""The plugin manager: built-ins and third-party plugins register through the same hooks.

Loading order: the modules in :data:`DEFAULT_PLUGINS`, then every entry point in the
``wsbench`` group. ``WSBENCH_DISABLE_PLUGINS=a,b`` blocks plugins by entry-point name,
distribution name, built-in module name (e.g. ``segmenters``) or registered class name
(e.g. ``gradcam``). A plugin that fails to import is recorded in :attr:`Registry.failures`
(shown by ``wsbench plugins``) and never breaks other commands.

``WSBENCH_PLUGIN_MODULES=pkg.mod,other`` additionally registers importable modules without
packaging them (handy while developing a plugin, and for the test-suite's subprocess runs).
"""

from __future__ import annotations

import difflib
import importlib
import os
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from wsbench import hookspecs
from wsbench.errors import PluginNotFound, WsbenchError
from wsbench.interfaces import ROLES

#: Built-in plugin modules, registered exactly like third-party ones.
DEFAULT_PLUGINS = (
    "wsbench.builtins.datasets",
    "wsbench.builtins.predictors",
    "wsbench.builtins.generators",
    "wsbench.builtins.segmenters",
    "wsbench.builtins.data_commands",
    "wsbench.builtins.eval_commands",
    "wsbench.builtins.leaderboard_commands",
)

ENTRY_POINT_GROUP = "wsbench"
DISABLE_ENV = "WSBENCH_DISABLE_PLUGINS"
MODULES_ENV = "WSBENCH_PLUGIN_MODULES"

_HOOK_FOR_ROLE = {
    "predictor": "register_predictors",
    "generator": "register_generators",
    "segmenter": "register_segmenters",
    "dataset": "register_datasets",
}


@dataclass
class PluginInfo:
    """One registered plugin class and where it came from."""

    name: str
    role: str
    cls: type
    distribution: str
    version: str
    source: str  # "builtin", "entry point 'x'", or "runtime"

    @property
    def description(self) -> str:
        return getattr(self.cls, "description", "") or (self.cls.__doc__ or "").strip().split("\n")[0]


@dataclass
class Registry:
    plugins: dict[str, dict[str, PluginInfo]] = field(default_factory=lambda: {r: {} for r in ROLES})
    failures: list[tuple[str, str]] = field(default_factory=list)  # (source, one-line error)
    modules: list[dict[str, str]] = field(default_factory=list)  # loaded plugin modules

    def names(self, role: str) -> list[str]:
        return sorted(self.plugins[role])

    def get(self, role: str, name: str) -> PluginInfo:
        """Look up a plugin; unknown names raise :class:`PluginNotFound` with suggestions."""
        if role not in self.plugins:
            raise WsbenchError(f"unknown plugin role '{role}'; roles: {', '.join(ROLES)}")
        try:
            return self.plugins[role][name]
        except KeyError:
            pass
        names = self.names(role)
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        failed = [s for s, _ in self.failures]
        extra = f" ({len(failed)} plugin module(s) failed to load; see `wsbench plugins`)" if failed else ""
        raise PluginNotFound(
            f"no {role} named '{name}'.{hint} Available {role}s: {', '.join(names) or 'none'}{extra}")


def _disabled() -> set[str]:
    return {s.strip() for s in os.environ.get(DISABLE_ENV, "").split(",") if s.strip()}


_pm: pluggy.PluginManager | None = None
_registry: Registry | None = None
_module_meta: dict[int, dict[str, str]] = {}
_load_failures: list[tuple[str, str]] = []


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, loading built-ins and entry points on first use."""
    global _pm
    if _pm is not None:
        return _pm
    pm = pluggy.PluginManager("wsbench")
    pm.add_hookspecs(hookspecs)
    disabled = _disabled()
    from wsbench import __version__

    for modname in DEFAULT_PLUGINS:
        short = modname.rsplit(".", 1)[-1]
        if short in disabled or modname in disabled:
            continue
        try:
            mod = importlib.import_module(modname)
        except Exception as e:  # a broken built-in must not break the CLI
            _load_failures.append((f"builtin {modname}", _one_line(e)))
            continue
        pm.register(mod, name=modname)
        _module_meta[id(mod)] = {"distribution": "wsbench", "version": __version__, "source": "builtin",
                                 "module": modname}

    for ep in _entry_points():
        dist = ep.dist.name if getattr(ep, "dist", None) else "?"
        version = ep.dist.version if getattr(ep, "dist", None) else "?"
        if ep.name in disabled or dist in disabled:
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            mod = ep.load()
        except Exception as e:
            _load_failures.append((f"entry point '{ep.name}' ({dist} {version})", _one_line(e)))
            continue
        try:
            pm.register(mod, name=ep.name)
        except Exception as e:
            _load_failures.append((f"entry point '{ep.name}' ({dist} {version})", _one_line(e)))
            continue
        _module_meta[id(mod)] = {"distribution": dist, "version": version, "source": f"entry point '{ep.name}'",
                                 "module": getattr(mod, "__name__", str(mod))}
    for modname in [m.strip() for m in os.environ.get(MODULES_ENV, "").split(",") if m.strip()]:
        if modname in disabled or pm.get_plugin(modname) is not None:
            continue
        try:
            mod = importlib.import_module(modname)
            pm.register(mod, name=modname)
        except Exception as e:
            _load_failures.append((f"{MODULES_ENV} module {modname}", _one_line(e)))
            continue
        _module_meta[id(mod)] = {"distribution": "local", "version": "0", "source": f"{MODULES_ENV}",
                                 "module": modname}
    _pm = pm
    return pm


def _entry_points():
    try:
        return list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    except Exception:  # pragma: no cover - broken metadata of an unrelated distribution
        return []


def register(obj: Any, name: str | None = None, *, distribution: str = "runtime", version: str = "0") -> str:
    """Register a plugin object (module or instance with hookimpls) at run time (tests, notebooks).

    Returns the name to pass to :func:`unregister`."""
    pm = get_plugin_manager()
    name = pm.register(obj, name=name)
    _module_meta[id(obj)] = {"distribution": distribution, "version": version, "source": "runtime",
                             "module": name}
    _invalidate()
    return name


def unregister(name: str) -> None:
    pm = get_plugin_manager()
    obj = pm.unregister(name=name)
    if obj is not None:
        _module_meta.pop(id(obj), None)
    _invalidate()


def _invalidate() -> None:
    global _registry
    _registry = None


def reset() -> None:
    """Forget all loaded plugins (tests; re-reads ``WSBENCH_DISABLE_PLUGINS``)."""
    global _pm, _registry
    _pm = None
    _registry = None
    _module_meta.clear()
    _load_failures.clear()


def get_registry() -> Registry:
    """All registered plugin classes by role (cached until plugins change)."""
    global _registry
    if _registry is not None:
        return _registry
    pm = get_plugin_manager()
    reg = Registry()
    reg.failures.extend(_load_failures)
    disabled = _disabled()
    for plugin in pm.get_plugins():
        meta = _module_meta.get(id(plugin), {"distribution": "?", "version": "?", "source": "runtime",
                                             "module": pm.get_name(plugin) or "?"})
        reg.modules.append(dict(meta))
        for role, hookname in _HOOK_FOR_ROLE.items():
            impl = getattr(plugin, hookname, None)
            if impl is None or not hasattr(impl, "wsbench_impl"):
                continue
            base = ROLES[role]

            def _register(cls, _role=role, _base=base, _meta=meta):
                if not (isinstance(cls, type) and issubclass(cls, _base)):
                    raise TypeError(f"{cls!r} is not a subclass of {_base.__name__}")
                if not cls.name:
                    raise TypeError(f"{cls.__name__} has no 'name'")
                if cls.name in disabled:
                    return
                if cls.name in reg.plugins[_role]:
                    prev = reg.plugins[_role][cls.name]
                    raise ValueError(f"{_role} '{cls.name}' is already registered by {prev.source} ({prev.distribution})")
                reg.plugins[_role][cls.name] = PluginInfo(cls.name, _role, cls, _meta["distribution"],
                                                          _meta["version"], _meta["source"])

            try:
                impl(register=_register)
            except Exception as e:
                reg.failures.append((f"{meta['source']} {meta['module']} ({hookname})", _one_line(e)))
                _log_traceback(e)
    _registry = reg
    return reg


def _log_traceback(e: BaseException) -> None:
    if os.environ.get("WSBENCH_DEBUG"):
        traceback.print_exception(e)


def get(role: str, name: str) -> PluginInfo:
    return get_registry().get(role, name)


def add_commands(cli) -> None:
    """Let every plugin add subcommands (``register_commands`` hook), isolating failures."""
    pm = get_plugin_manager()
    for plugin in pm.get_plugins():
        impl = getattr(plugin, "register_commands", None)
        if impl is None or not hasattr(impl, "wsbench_impl"):
            continue
        try:
            impl(cli=cli)
        except Exception as e:
            meta = _module_meta.get(id(plugin), {"module": pm.get_name(plugin) or "?"})
            _load_failures.append((f"{meta.get('module')} (register_commands)", _one_line(e)))

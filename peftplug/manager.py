"""The plugin manager: built-ins first (found by :mod:`peftplug.discovery`), then entry points
of group ``peftplug``.

:class:`PluginManager` wraps a :class:`pluggy.PluginManager` with typed calls and the
registries of backends, methods, formats, naming conventions and architectures.
:func:`get_plugin_manager` returns the process-wide instance.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pluggy

from peftplug import hookspecs
from peftplug.discovery import builtin_plugins
from peftplug.errors import BackendError, PluginError, RegistryError
from peftplug.markers import PROJECT_NAME
from peftplug.registration import Architecture, Backend, Convention, Format, Method, load_declared
from peftplug.registry import Registry
from peftplug.tensor_roles import AXES, check_roles

ENTRY_POINT_GROUP = "peftplug"
DISABLE_ENV = "PEFTPLUG_DISABLE_PLUGINS"
LOAD_ENV = "PEFTPLUG_LOAD_PLUGINS"
BUILTIN_DISTRIBUTION = "peftplug"


@dataclass(frozen=True)
class PluginLoadFailure:
    """An entry point that could not be imported: which one, from which distribution, why."""

    name: str
    distribution: str
    error: str

    def __str__(self) -> str:
        return f"plugin {self.name!r} from distribution {self.distribution!r} failed to load: {self.error}"


def _names_from_env(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def _warn_unknown_disabled(disabled: set[str], builtins: Iterable[str]) -> None:
    """Warn about names in ``PEFTPLUG_DISABLE_PLUGINS`` that are no built-in plugin (by module or
    short name) and no installed entry point: a misspelt name would disable nothing, silently.
    Not an error: the variable may name a plugin that is installed elsewhere only."""
    if not disabled:
        return
    builtins = list(builtins)
    short = [name.rsplit(".", 1)[-1] for name in builtins]
    entry_points = [entry_point.name for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)]
    unknown = sorted(disabled - set(builtins) - set(short) - set(entry_points))
    if unknown:
        known = ", ".join(sorted(set(short) | set(entry_points)))
        warnings.warn(
            f"peftplug: {DISABLE_ENV} names unknown plugin(s) {', '.join(map(repr, unknown))}, which disable "
            f"nothing; known plugins: {known}",
            RuntimeWarning,
            stacklevel=4,
        )


def _namespace_label(namespace: str | None) -> str:
    return "peftplug" if namespace is None else f"peftplug.{namespace}"


def _check_backend(item: Any) -> str | None:
    if not isinstance(item, Backend):
        return f"expected peftplug.registration.Backend, got {type(item).__name__}"
    if ":" not in item.implementation:
        return f"backend {item.name!r}: implementation must be 'module:attribute', got {item.implementation!r}"
    return None


def _check_method(item: Any) -> str | None:
    from peftplug.config import AdapterConfig

    if not isinstance(item, Method):
        return f"expected peftplug.registration.Method, got {type(item).__name__}"
    if not (isinstance(item.config_class, type) and issubclass(item.config_class, AdapterConfig)):
        return f"method {item.name!r}: config_class must subclass peftplug.AdapterConfig"
    if not item.config_class.peft_type:
        return f"method {item.name!r}: {item.config_class.__name__}.peft_type is empty"
    if item.kind not in ("layer", "prompt"):
        return f"method {item.name!r}: kind must be 'layer' or 'prompt', got {item.kind!r}"
    problem = check_roles(item.tensors)
    if problem:
        return f"method {item.name!r}: {problem}"
    for field_name, axis in item.module_fields.items():
        if axis not in AXES:
            return f"method {item.name!r}: module_fields[{field_name!r}] is {axis!r}, not one of {', '.join(AXES)}"
    declared = [("rescale_rank", item.rescale_rank)]
    for table in ("codecs", "layers", "prompt_encoders", "exports", "model_methods"):
        if not isinstance(getattr(item, table), Mapping):
            return f"method {item.name!r}: {table} must be a mapping, got {type(getattr(item, table)).__name__}"
        declared += [(f"{table}[{key!r}]", value) for key, value in getattr(item, table).items()]
    if not isinstance(item.namespaces, Mapping):
        return f"method {item.name!r}: namespaces must be a mapping, got {type(item.namespaces).__name__}"
    for namespace, names in item.namespaces.items():
        if not isinstance(names, Mapping):
            return f"method {item.name!r}: namespaces[{namespace!r}] must be a mapping, got {type(names).__name__}"
        declared += [(f"namespaces[{namespace!r}][{key!r}]", value) for key, value in names.items()]
    for what, value in declared:
        if value is not None and (not isinstance(value, str) or value.count(":") != 1 or value.startswith(":")):
            return f"method {item.name!r}: {what} is {value!r}, not a 'module:attribute' string"
    misplaced, owner_kind = ("prompt_encoders", "prompt") if item.kind == "layer" else ("layers", "layer")
    if getattr(item, misplaced):
        return f"method {item.name!r}: {misplaced} is for {owner_kind} methods, and this is a {item.kind} method"
    return None


def _check_format(item: Any) -> str | None:
    if not isinstance(item, Format):
        return f"expected a peftplug.registration.Format instance, got {type(item).__name__}"
    if not item.name:
        return f"format {type(item).__name__} has no name"
    return None


def _check_architecture(item: Any) -> str | None:
    if not isinstance(item, Architecture):
        return f"expected peftplug.registration.Architecture, got {type(item).__name__}"
    return None


def _check_convention(item: Any) -> str | None:
    if not isinstance(item, Convention):
        return f"expected peftplug.registration.Convention, got {type(item).__name__}"
    if item.linear_weight not in ("out_in", "in_out"):
        return f"convention {item.name!r}: linear_weight must be 'out_in' or 'in_out', got {item.linear_weight!r}"
    return None


def _check_conventions_named(
    kind: str, registry: Registry, named: Callable[[Any], Iterable[str]], conventions: Registry[Convention]
) -> None:
    """Every convention an item of ``registry`` (a ``kind``: architecture, format) names is
    registered; else the first that is not is named, with the item and its plugin."""
    for item in registry:
        for name in named(item):
            if name not in conventions:
                raise RegistryError(
                    f"{kind} {item.name!r} (plugin {registry.owner(item.name)!r}) "
                    f"names convention {name!r}, which no plugin registers; registered conventions: "
                    f"{', '.join(conventions.names()) or 'none'}"
                )


class PluginManager:
    """peftplug's plugin manager: registration, entry points, registries and typed hook calls."""

    def __init__(self, *, load_entry_points: bool = True, builtins: Iterable[str] | None = None):
        """Register ``builtins`` (module names; by default every built-in plugin found by
        :func:`~peftplug.discovery.builtin_plugins`) less those ``PEFTPLUG_DISABLE_PLUGINS``
        names, then, with ``load_entry_points``, the installed entry points it allows."""
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.distributions: dict[str, str] = {}
        self.failures: list[PluginLoadFailure] = []
        builtins = builtin_plugins() if builtins is None else tuple(builtins)
        disabled = _names_from_env(DISABLE_ENV) or set()
        _warn_unknown_disabled(disabled, builtins)
        for module_name in builtins:
            if module_name in disabled or module_name.rsplit(".", 1)[-1] in disabled:
                continue
            self.register(importlib.import_module(module_name), module_name, BUILTIN_DISTRIBUTION)
        if load_entry_points:
            self._load_entry_points(disabled, _names_from_env(LOAD_ENV))
        self.pm.check_pending()

    # ------------------------------------------------------------ registration
    def register(self, plugin: Any, name: str | None = None, distribution: str = "<registered in code>") -> str:
        """Register ``plugin`` (a module or object with hookimpls); returns its plugin name."""
        try:
            plugin_name = self.pm.register(plugin, name=name)
        except ValueError as error:
            raise PluginError(f"cannot register plugin {name or plugin!r}: {error}") from error
        except pluggy.PluginValidationError as error:
            raise PluginError(f"plugin {name or plugin!r} does not match peftplug's hook specs: {error}") from error
        if plugin_name is None:
            raise PluginError(f"plugin {name or plugin!r} is blocked")
        # pluggy accepts hooks it has no spec for until check_pending(); refuse them here, so a
        # misspelt hook fails its own plugin instead of the whole manager.
        unknown = sorted(
            caller.name
            for caller in self.pm.get_hookcallers(plugin) or []
            if caller.spec is None
            and any(impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls())
        )
        if unknown:
            self.pm.unregister(plugin)
            raise PluginError(f"plugin {plugin_name!r} implements unknown hook(s): {', '.join(unknown)}")
        self.distributions[plugin_name] = distribution
        self._forget_registries()
        return plugin_name

    def unregister(self, name: str) -> None:
        """Remove the plugin called ``name``."""
        self.pm.unregister(name=name)
        self.distributions.pop(name, None)
        self._forget_registries()

    def _load_entry_points(self, disabled: set[str], only: set[str] | None) -> None:
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if entry_point.name in disabled or (only is not None and entry_point.name not in only):
                continue
            distribution = entry_point.dist.name if entry_point.dist else "<unknown distribution>"
            try:
                plugin = entry_point.load()
                self.register(plugin, entry_point.name, distribution)
            except Exception as error:  # a broken plugin must not take the others down
                failure = PluginLoadFailure(entry_point.name, distribution, f"{type(error).__name__}: {error}")
                self.failures.append(failure)
                warnings.warn(f"peftplug: {failure}", RuntimeWarning, stacklevel=3)

    def distribution_of(self, plugin_name: str) -> str:
        """The distribution a plugin came from (``peftplug`` for the built-ins)."""
        return self.distributions.get(plugin_name, "<unknown distribution>")

    # ------------------------------------------------------------ registries
    def _forget_registries(self) -> None:
        for name in ("backends", "methods", "formats", "conventions", "architectures"):
            self.__dict__.pop(name, None)

    def _collect(self, hook_name: str, registry: Registry) -> Registry:
        hook = getattr(self.pm.hook, hook_name)
        # get_hookimpls() lists plugins oldest first, so a duplicate's message names the
        # built-in as the first owner.
        for impl in hook.get_hookimpls():
            result = impl.function()
            items = result if isinstance(result, (list, tuple)) else [result]
            for item in items:
                if item is not None:
                    registry.add(item, impl.plugin_name)
        return registry

    @cached_property
    def backends(self) -> Registry[Backend]:
        """Registered backends, by name."""
        return self._collect("peftplug_register_backends", Registry("backend", _check_backend))

    @cached_property
    def methods(self) -> Registry[Method]:
        """Registered methods, by name; ``peft_type`` values are unique too."""
        registry = self._collect("peftplug_register_methods", Registry("method", _check_method))
        owners: dict[str, str] = {}
        for method in registry:
            if method.peft_type in owners:
                raise RegistryError(
                    f"peft_type {method.peft_type!r} is claimed by method {owners[method.peft_type]!r} "
                    f"(plugin {registry.owner(owners[method.peft_type])!r}) and by method {method.name!r} "
                    f"(plugin {registry.owner(method.name)!r})"
                )
            owners[method.peft_type] = method.name
        return registry

    @cached_property
    def formats(self) -> Registry[Format]:
        """Registered on-disk formats, by name; the convention a format names is registered."""
        registry = self._collect("peftplug_register_formats", Registry("format", _check_format))
        _check_conventions_named(
            "format", registry, lambda fmt: () if fmt.convention is None else (fmt.convention,), self.conventions
        )
        return registry

    @cached_property
    def conventions(self) -> Registry[Convention]:
        """Registered naming conventions, by name; at most one is canonical."""
        registry = self._collect("peftplug_register_conventions", Registry("convention", _check_convention))
        canonical = [convention.name for convention in registry if convention.canonical]
        if len(canonical) > 1:
            owners = ", ".join(f"{name!r} (plugin {registry.owner(name)!r})" for name in canonical)
            raise RegistryError(f"several conventions claim to be canonical: {owners}; exactly one may be")
        return registry

    @cached_property
    def architectures(self) -> Registry[Architecture]:
        """Registered model families, by name; every convention one names is registered."""
        registry = self._collect("peftplug_register_architectures", Registry("architecture", _check_architecture))
        _check_conventions_named("architecture", registry, Architecture.named_conventions, self.conventions)
        return registry

    def method_exports(self, namespace: str | None = None) -> dict[str, Callable[[], Any]]:
        """The public names the methods add to ``peftplug`` (each config class, and each
        ``Method.exports`` entry) or, given ``namespace``, to ``peftplug.<namespace>`` (their
        ``Method.namespaces[namespace]`` entries), each as a function that imports and returns it.
        A name two methods declare is an error naming both."""
        exports: dict[str, Callable[[], Any]] = {}
        owners: dict[str, str] = {}
        for method in self.methods:
            if namespace is None:
                declared = dict(method.exports)
                exports[method.config_class.__name__] = lambda cls=method.config_class: cls
            else:
                declared = dict(method.namespaces.get(namespace, {}))
            for name, spec in declared.items():
                if name in owners:
                    raise RegistryError(
                        f"{name!r} in {_namespace_label(namespace)} is declared by methods "
                        f"{owners[name]!r} and {method.name!r}; a name has one owner"
                    )
                owners[name] = method.name
                exports[name] = lambda spec=spec, owner=method.name: load_declared(spec, owner)
        return exports

    def method_for_peft_type(self, peft_type: str) -> Method:
        """The method whose config has this ``peft_type``; unknown types list the known ones."""
        for method in self.methods:
            if method.peft_type == peft_type:
                return method
        known = ", ".join(sorted(m.peft_type for m in self.methods))
        raise RegistryError(f"unknown peft_type {peft_type!r}; known: {known}")

    def method_for_config(self, config: Any) -> Method:
        """The method whose config class ``config`` is an instance of."""
        for method in self.methods:
            if type(config) is method.config_class:
                return method
        return self.method_for_peft_type(getattr(config, "peft_type", repr(type(config))))

    def architecture_for_model_type(self, model_type: str | None) -> Architecture | None:
        """The architecture answering to a transformers ``model_type``, or None."""
        for architecture in self.architectures:
            if model_type in architecture.model_types:
                return architecture
        return None

    # ------------------------------------------------------------ typed hook calls
    @property
    def hook(self) -> Any:
        """The raw pluggy hook relay, for the lifecycle hooks."""
        return self.pm.hook

    def detect_backend(self, model: Any) -> str:
        """Name of the backend ``model`` belongs to; a clear error when no plugin claims it."""
        name = self.pm.hook.peftplug_detect_backend(model=model)
        if name is None:
            known = ", ".join(self.backends.names()) or "none"
            raise BackendError(
                f"no peftplug backend recognises a model of type {type(model).__module__}.{type(model).__qualname__}; "
                f"registered backends: {known}"
            )
        self.backends.get(name)
        return name

    def wrap_layer(self, method: str, backend: str, layer: Any, name: str, config: Any, adapter_name: str) -> Any:
        """The adapter layer wrapping ``layer``: a plugin's ``peftplug_wrap_layer`` answer if one
        answers, else what the method's declared layer factory for ``backend`` returns; None when
        neither handles the layer."""
        wrapped = self.pm.hook.peftplug_wrap_layer(
            method=method, backend=backend, layer=layer, name=name, config=config, adapter_name=adapter_name
        )
        if wrapped is not None:
            return wrapped
        factory = self.methods.get(method).layer_factory(backend)
        return None if factory is None else factory(layer, name, config, adapter_name)

    def build_prompt_encoder(self, method: str, backend: str, config: Any, model: Any) -> Any:
        """The virtual-token encoder of a prompt method: a plugin's
        ``peftplug_build_prompt_encoder`` answer if one answers, else what the method's declared
        encoder factory for ``backend`` returns; None when neither builds one."""
        encoder = self.pm.hook.peftplug_build_prompt_encoder(method=method, backend=backend, config=config, model=model)
        if encoder is not None:
            return encoder
        factory = self.methods.get(method).prompt_encoder_factory(backend)
        return None if factory is None else factory(config, model)


_manager: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, created on first use."""
    global _manager
    if _manager is None:
        _manager = PluginManager()
    return _manager


def reset_plugin_manager() -> None:
    """Drop the process-wide manager so the next call re-reads plugins and environment."""
    global _manager
    _manager = None

"""Exceptions raised by peftplug. Each names the thing at fault."""


class PeftplugError(Exception):
    """Base class of every error peftplug raises on purpose."""


class ConfigError(PeftplugError, ValueError):
    """A config field holds a value that is not allowed; the message names the field and value."""

    def __init__(self, config_name: str, field: str, value, allowed: str):
        self.config_name = config_name
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{config_name}.{field}={value!r} is invalid: {allowed}")


class RegistryError(PeftplugError, LookupError):
    """A name is registered twice, or is not registered at all."""


class PluginError(PeftplugError):
    """A plugin broke the contract: a bad registration or an object with the wrong interface."""


class TargetModulesError(PeftplugError, ValueError):
    """The target-module patterns of a config do not match the model."""


class AdapterLoadError(PeftplugError, ValueError):
    """An adapter on disk cannot be loaded into the model: missing files, keys or shapes that differ."""


class BackendError(PeftplugError, TypeError):
    """No backend recognises the model, or a backend cannot do what was asked of it."""


class AdapterStateError(PeftplugError, ValueError):
    """An adapter operation the model's adapters do not allow as they are (a merged adapter
    deleted, two adapters' modules_to_save copies active at once)."""


class UnsafeMergeError(PeftplugError, ValueError):
    """A safe merge found that merging an adapter would put NaN or inf in a base weight."""


class AdapterShapeError(AdapterLoadError):
    """A saved tensor's shape differs from the parameter it is loaded into."""

    def __init__(self, key: str, saved: tuple[int, ...], expected: tuple[int, ...]):
        self.key, self.saved, self.expected = key, saved, expected
        super().__init__(f"tensor {key!r} has shape {list(saved)} in the adapter but {list(expected)} in the model")


def some_names(names: list[str], limit: int = 5) -> str:
    """The first ``limit`` of ``names`` for an error message, and how many more there are."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


class AdapterKeysWarning(UserWarning):
    """An adapter's keys and the model's modules do not all meet: keys that match no module, or
    targeted modules that get no tensor. Loading goes on, as HF PEFT's does; the command line
    makes it an error."""

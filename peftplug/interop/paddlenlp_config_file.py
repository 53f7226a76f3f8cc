"""A config dataclass kept in one JSON file the way PaddleNLP's PEFT configs keep theirs
(``lora_config.json``, ``prefix_config.json``): ``save_pretrained`` / ``from_pretrained`` /
``from_json_file`` / ``to_dict`` with PaddleNLP's behaviour, the file written atomically."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar

from peftplug.errors import ConfigError
from peftplug.files import write_files_atomically


class PaddleNLPConfigFile:
    """Mixed into a dataclass: its fields saved as ``file_name`` (sorted keys, indent 2) and read back."""

    file_name: ClassVar[str]
    # Fields PaddleNLP computes and writes beside the dataclass's, and drops on reading.
    computed: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to_json_bytes(self) -> bytes:
        """The file's content, as PaddleNLP writes it (computed fields included)."""
        data = self.to_dict()
        data.update({name: getattr(self, name) for name in self.computed})
        return json.dumps(data, indent=2, sort_keys=True).encode()

    def save_pretrained(self, save_directory: str | Path) -> None:
        """Write ``file_name`` in ``save_directory`` (created if needed; a file there is an error)."""
        directory = Path(save_directory)
        if directory.is_file():
            raise ConfigError(type(self).__name__, "save_directory", str(directory), "a directory, not a file")
        write_files_atomically(directory, {self.file_name: self.to_json_bytes()})

    @classmethod
    def coerce(cls, config: Any, owner: str, argument: str) -> Any:
        """``config`` as this class; PaddleNLP's own class of the same name (a script mixing the
        two imports) is taken field by field; anything else is an error naming ``argument`` of ``owner``."""
        if isinstance(config, cls):
            return config
        if dataclasses.is_dataclass(config) and type(config).__name__ == cls.__name__:
            names = {field.name for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
            return cls(**{k: v for k, v in dataclasses.asdict(config).items() if k in names})
        raise ConfigError(owner, argument, type(config).__name__, f"a {cls.__name__}")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> Any:
        """The config in ``file_name`` of the directory; ``kwargs`` are the starting values of
        fields the file leaves out, and fields the class lacks are skipped, as in PaddleNLP."""
        path = Path(pretrained_model_name_or_path) / cls.file_name
        if not path.is_file():
            raise ValueError(f"Can't find {cls.file_name} at '{pretrained_model_name_or_path}'")
        loaded = cls.from_json_file(path)
        if not isinstance(loaded, dict):
            raise ConfigError(cls.__name__, str(path), type(loaded).__name__, "a JSON object of config fields")
        config = cls(**kwargs)
        names = {field.name for field in dataclasses.fields(config)}  # type: ignore[arg-type]
        for key, value in loaded.items():
            if key in names:
                setattr(config, key, value)
        return config

    @classmethod
    def from_json_file(cls, path_json_file: str | Path) -> Any:
        """The JSON content of the file, as read."""
        with open(path_json_file, encoding="utf-8") as file:
            return json.load(file)

"""PeftModel: HF PEFT's model API, written once over the backend operations.

Each backend builds its own class from :class:`PeftModel` and its framework's module class
(``torch.nn.Module``, ``paddle.nn.Layer``), so a peftplug model is a module of its framework
(``Trainer`` accepts it) and ``isinstance(model, peftplug.PeftModel)`` holds on every backend.
The module tree mirrors HF PEFT's: ``peft_model.base_model.model`` is the user's model, so
parameter names, counts and saved keys are the same as HF PEFT's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from peftplug.adapter_io import adapter_files, read_adapter, replaced_adapter_files
from peftplug.adapter_names import check_adapter_name
from peftplug.config import AdapterConfig
from peftplug.errors import (
    AdapterKeysWarning,
    AdapterLoadError,
    ConfigError,
    PeftplugError,
    TargetModulesError,
    some_names,
)
from peftplug.files import FileContent, write_files_atomically
from peftplug.interop.cross_framework import format_of, state_for_format, state_for_model
from peftplug.manager import get_plugin_manager
from peftplug.model.delegation import DelegatesToInner
from peftplug.model.forward import ForwardDescriptor
from peftplug.model.mixed_batch import adapter_per_row, row_adapters
from peftplug.model.model_card import CARD_NAME
from peftplug.state import AdapterState
from peftplug.targets import ALL_LINEAR, select_targets

KEY_PREFIX = "base_model.model."
# HF PEFT's prompt-learning model holds the user's model directly as ``base_model``, so the keys
# of its modules_to_save are ``base_model.<module path>...``; the prompt itself is saved as
# ``prompt_embeddings`` (no prefix), the encoder's own weights (peftplug only) as
# ``prompt_encoder.<name>`` in AdapterState.extra_tensors.
PROMPT_KEY_PREFIX = "base_model."
ENCODER_KEY_PREFIX = "prompt_encoder."
DEFAULT_ADAPTER = "default"
CLASSIFIER_MODULES = ("classifier", "score")


def _huggingface_hub() -> Any:
    try:
        import huggingface_hub
    except ImportError as error:
        raise PeftplugError(
            f"push_to_hub needs the huggingface_hub package, which is not installed ({error}); "
            "install it with: pip install huggingface_hub"
        ) from None
    return huggingface_hub


class LoadResult(NamedTuple):
    """What :meth:`PeftModel.load_adapter` returns, as HF PEFT's (torch's ``_IncompatibleKeys``):
    the adapter's parameters the file had nothing for (parameter names, adapter name included)
    and the file's keys that matched nothing (as saved)."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _written_into(config: AdapterConfig, resolved: AdapterConfig) -> AdapterConfig:
    """``config`` with the field values of ``resolved`` (its copy with defaults filled in) written
    into it: the config object the user passed is the one kept, as in HF PEFT."""
    if resolved is not config:
        for field in dataclasses.fields(config):
            setattr(config, field.name, getattr(resolved, field.name))
    return config


class PeftModel(DelegatesToInner):
    """A base model with adapters injected. Backends subclass it; users get it from
    :func:`peftplug.get_peft_model` or :meth:`PeftModel.from_pretrained`.

    Attributes it lacks (``config``, ``device``, ...) are the user's model's. A backend that
    supports prompt-learning methods sets ``_prompt_learning`` when it attaches a prompt encoder
    and implements :meth:`_prompt_forward` and :meth:`_prompt_generate`.
    """

    # Set by the backend's __init__ (see _init_peft).
    base_model: Any
    peft_config: dict[str, AdapterConfig]
    active_adapter: str

    forward = ForwardDescriptor()
    _prompt_learning = False
    _inner = "base_model"
    _own = DelegatesToInner._own | {"_peft_ops"}

    def _init_peft(self, ops: Any, method: Any) -> None:
        self._peft_ops = ops
        self._peft_method = method
        self.peft_config = {}
        self.active_adapter = DEFAULT_ADAPTER
        self._adapters_disabled = False
        self.base_model._attach(ops, self.peft_config, DEFAULT_ADAPTER)

    def _declared_attribute(self, name: str) -> Any:
        """A model method the adapters' method declares (``Method.model_methods``), bound to this model."""
        method = self.__dict__.get("_peft_method")
        function = None if method is None or name.startswith("_") else method.model_method(name)
        return None if function is None else functools.partial(function, self)

    @property
    def _peft_manager(self) -> Any:
        return get_plugin_manager()

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        model: Any,
        model_id: str | Path,
        adapter_name: str = DEFAULT_ADAPTER,
        is_trainable: bool = False,
        config: AdapterConfig | None = None,
        format: str | None = None,
        subfolder: str | None = None,
        **kwargs: Any,
    ) -> PeftModel:
        """Load the adapter saved in ``model_id`` onto ``model`` (either framework).

        The format is detected from the files (HF PEFT's, or any registered one) unless
        ``format`` names it. With ``is_trainable=False`` (the default, as in HF PEFT) the
        adapter is frozen for inference and the model returned in eval mode. As in HF PEFT, the
        model is the task class of the config's ``task_type`` (:class:`PeftModelForCausalLM`,
        ...), or the class it is called on when that is a task class and the config names none.

        HF PEFT's other keywords (``revision``, ``torch_dtype``, ``device_map``, ``torch_device``,
        ``low_cpu_mem_usage``, ``ephemeral_gpu_offload``, ``autocast_adapter_dtype``) are taken as
        :mod:`peftplug.model.load_options` documents; any other keyword is an error naming it.
        """
        from peftplug.distributed.tp_save import load_shards, read_config_of_shards, shards_to_load
        from peftplug.model.api import get_peft_model
        from peftplug.model.load_options import apply_load_options, check_load_options
        from peftplug.model.task_models import as_task_model, task_class

        check_load_options(f"{cls.__name__}.from_pretrained", kwargs, model)
        check_adapter_name(adapter_name)
        directory = Path(model_id) / (subfolder or "")
        shard_set = shards_to_load(directory, format)
        state = read_config_of_shards(shard_set, format) if shard_set else read_adapter(directory, format)
        if not shard_set:  # saved from the other framework: its tree and conventions to this model's
            state = state_for_model(state, model, format_of(directory, format))
        config = dataclasses.replace(config or state.config, inference_mode=not is_trainable)
        peft_model = get_peft_model(model, config, adapter_name=adapter_name)
        peft_model = as_task_model(peft_model, task_class(config.task_type, cls._task_class()))
        if shard_set:
            load_shards(peft_model, shard_set, adapter_name, format)
        else:
            peft_model.load_adapter_state(state, adapter_name)
        apply_load_options(peft_model, adapter_name, kwargs)
        if not is_trainable:
            peft_model.eval()
        return peft_model

    @classmethod
    def _task_class(cls) -> type | None:
        """The task class (:mod:`peftplug.model.task_models`) this class is, or derives from; None
        for a plain PeftModel."""
        from peftplug.model.task_models import TASK_MODEL_CLASSES

        return next((task for task in TASK_MODEL_CLASSES.values() if issubclass(cls, task)), None)

    def load_adapter(
        self,
        model_id: str | Path,
        adapter_name: str,
        is_trainable: bool = False,
        format: str | None = None,
        subfolder: str | None = None,
    ) -> LoadResult:
        """Load another saved adapter into this model under ``adapter_name``, inactive (use
        :meth:`set_adapter`), as HF PEFT does: trainable when ``is_trainable``, else frozen and the
        model put in eval mode. Returns the missing and unexpected keys (:class:`LoadResult`)."""
        from peftplug.distributed.tp_save import load_shards, read_config_of_shards, shards_to_load

        check_adapter_name(adapter_name)
        directory = Path(model_id) / (subfolder or "")
        shard_set = shards_to_load(directory, format)
        state = read_config_of_shards(shard_set, format) if shard_set else read_adapter(directory, format)
        if not shard_set:
            state = state_for_model(state, self.base_model.model, format_of(directory, format))
        self.add_adapter(adapter_name, dataclasses.replace(state.config, inference_mode=not is_trainable))
        if is_trainable:
            self.base_model.set_requires_grad(adapter_name)
        if shard_set:
            load_shards(self, shard_set, adapter_name, format)
            result = LoadResult([], [])
        else:
            result = self.load_adapter_state(state, adapter_name)
        if not is_trainable:
            self.eval()
        return result

    def load_adapter_state(self, state: AdapterState, adapter_name: str) -> LoadResult:
        """Copy the tensors of ``state`` into adapter ``adapter_name``.

        Keys are HF PEFT's (with or without the ``base_model.model.`` prefix; ``base_model.`` and
        ``prompt_embeddings`` for prompt-learning methods, whose encoder also takes the state's
        ``extra_tensors``). A tensor whose shape differs raises an error naming it and both
        shapes; keys that match nothing are an error when no key matched at all (the adapter
        belongs to another model), a warning otherwise; a module given some of its tensors but not
        all (``lora_B`` without ``lora_A``) is an error naming the missing one. Returns the
        missing and unexpected keys, as :meth:`load_adapter` does.
        """
        ops = self._peft_ops
        self._check_adapter(adapter_name)
        prompt = self.peft_config[adapter_name].is_prompt_learning
        tensors = dict(state.tensors)
        taken: set[str] = set()
        if prompt:
            encoder = ops.prompt_encoders(self)[adapter_name]
            extra = {
                key[len(ENCODER_KEY_PREFIX) :]: value
                for key, value in state.extra_tensors.items()
                if key.startswith(ENCODER_KEY_PREFIX)
            }
            consumed = encoder.import_prompt(tensors, extra)
            tensors = {key: value for key, value in tensors.items() if key not in consumed}
            tensors = {key.removeprefix(PROMPT_KEY_PREFIX): value for key, value in tensors.items()}
        else:
            tensors = {key.removeprefix(KEY_PREFIX): value for key, value in tensors.items()}
        prefix_saved = PROMPT_KEY_PREFIX if prompt else KEY_PREFIX
        starved: list[str] = []
        for name, layer in self._adapter_layers():
            if adapter_name not in layer.adapter_names:
                continue
            prefix = f"{name}."
            own = {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}
            consumed = layer.import_adapter(adapter_name, own, prefix_saved + prefix)
            taken.update(prefix + suffix for suffix in consumed)
            if not consumed:
                starved.append(name)
                continue
            missing = sorted(set(layer.export_adapter(adapter_name)) - set(consumed))
            if missing:
                raise AdapterLoadError(
                    f"adapter {adapter_name!r}: the file has {', '.join(map(repr, sorted(consumed)))} of module "
                    f"{name!r} but not {', '.join(repr(prefix_saved + prefix + suffix) for suffix in missing)}; a "
                    "partial module would keep a fresh tensor beside trained ones"
                )
        parameters = dict(ops.named_parameters(self.base_model.model))
        for key in tensors.keys() - taken:
            if key in parameters:
                ops.copy_into(parameters[key], tensors[key], prefix_saved + key)
                taken.add(key)
        unexpected = sorted(tensors.keys() - taken)
        if unexpected and len(unexpected) == len(tensors) and not prompt:
            raise AdapterLoadError(
                f"none of the adapter's {len(tensors)} tensors matches this model "
                f"(first: {KEY_PREFIX + unexpected[0]!r}); was it trained on another model?"
            )
        if unexpected:
            warnings.warn(
                f"adapter {adapter_name!r}: unexpected keys ignored: {some_names(unexpected)}",
                AdapterKeysWarning,
                stacklevel=3,
            )
        if starved:
            warnings.warn(
                f"adapter {adapter_name!r}: no tensors for modules {some_names(starved)}",
                AdapterKeysWarning,
                stacklevel=3,
            )
        missing = [
            f"{prefix_saved}{name}.{parameter}"
            for name, layer in self._adapter_layers()
            if name in starved and not getattr(layer, "auxiliary", False)
            for parameter, _ in ops.named_parameters(layer)
            if adapter_name in parameter.split(".")
        ]
        return LoadResult(missing, [prefix_saved + key for key in unexpected])

    # ---------------------------------------------------------------- adapters
    def add_adapter(self, adapter_name: str, peft_config: AdapterConfig) -> None:
        """Inject a new adapter ``adapter_name`` (same method as the existing ones), keeping
        ``peft_config`` itself. As in HF PEFT, the first adapter becomes active (trainable unless
        ``peft_config.inference_mode``, the base model frozen); a later one is added inactive and
        frozen, and no parameter already there changes its trainability."""
        check_adapter_name(adapter_name)
        if adapter_name in self.peft_config:
            raise ConfigError(type(peft_config).__name__, "adapter_name", adapter_name, "an adapter name not in use")
        method = self._peft_manager.method_for_config(peft_config)
        if self.peft_config and method.name != self._peft_method.name:
            raise PeftplugError(
                f"this model holds {self._peft_method.name} adapters; a {method.name} adapter cannot be added to it"
            )
        ops = self._peft_ops
        first = not self.peft_config
        before = [] if first else [(p, ops.is_trainable(p)) for _, p in ops.named_parameters(self)]
        self._inject(adapter_name, peft_config)
        if first:
            self.active_adapter = adapter_name
            self._freeze_base_model(peft_config)
            self.base_model.set_adapter([adapter_name], inference_mode=peft_config.inference_mode)
        else:
            self.base_model.set_requires_grad(adapter_name, False)
            self.base_model.active_adapter = self.base_model.active_adapters  # a list, as HF PEFT leaves it
        self._set_prompt_encoders_trainable()
        for parameter, trainable in before:
            ops.set_trainable(parameter, trainable)

    def set_adapter(self, adapter_name: str, inference_mode: bool = False) -> None:
        """Make ``adapter_name`` the active adapter: its parameters trainable unless
        ``inference_mode``, every other adapter's frozen (HF PEFT's rule). Several adapters are
        applied together with ``model.base_model.set_adapter([...])``."""
        self._check_adapter(adapter_name)
        self.active_adapter = adapter_name
        self.base_model.set_adapter(adapter_name, inference_mode=inference_mode)
        self._set_prompt_encoders_trainable(inference_mode)

    def set_requires_grad(self, adapter_names: str | list[str], requires_grad: bool = True) -> None:
        """Make the parameters of ``adapter_names`` trainable (or frozen), active or not."""
        self.base_model.set_requires_grad(adapter_names, requires_grad)

    def delete_adapter(self, adapter_name: str) -> None:
        """Remove adapter ``adapter_name`` and its parameters from every layer; when it was the
        active one, the first remaining adapter by name becomes active (HF PEFT's choice)."""
        self._check_adapter(adapter_name)
        if len(self.peft_config) == 1:
            raise PeftplugError(f"{adapter_name!r} is the only adapter; use unload() to remove it")
        prompt = self.peft_config[adapter_name].is_prompt_learning
        self.base_model.delete_adapter(adapter_name)
        if prompt:
            self._peft_ops.remove_prompt_encoder(self, adapter_name)
        if len(self.base_model.active_adapters) == 1:
            self.active_adapter = self.base_model.active_adapters[0]
        self._set_prompt_encoders_trainable()

    @property
    def active_adapters(self) -> list[str]:
        """The active adapters' names (several once ``base_model.set_adapter([...])`` set them)."""
        return self.base_model.active_adapters

    @property
    def active_peft_config(self) -> AdapterConfig:
        """The config of the active adapter."""
        return self.peft_config[self.active_adapter]

    @property
    def modules_to_save(self) -> set[str] | None:
        """Every adapter's ``modules_to_save`` names together, or None when there are none (HF PEFT's)."""
        modules = {
            name for config in self.peft_config.values() for name in getattr(config, "modules_to_save", None) or []
        }
        return modules or None

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Context manager running the base model alone, with every adapter switched off and
        frozen (for prompt-learning methods: no virtual tokens); on exit the active adapters are
        switched on and trainable again, as in HF PEFT."""
        self.base_model.disable_adapter_layers()
        self._adapters_disabled = True
        try:
            yield
        finally:
            self._adapters_disabled = False
            self.base_model.enable_adapter_layers()

    # ---------------------------------------------------------------- merging
    def merge_adapter(self, adapter_names: list[str] | None = None, safe_merge: bool = False) -> None:
        """Fold the adapters (default: the active ones) into the base weights, in place; with
        ``safe_merge`` a merge that would put NaN or inf in a weight is an error naming the
        module, raised before any weight is written."""
        self._refuse_merging_prompts(self.base_model.names_or_active(adapter_names))
        self.base_model.merge_adapter(adapter_names, safe_merge=safe_merge)

    def unmerge_adapter(self) -> None:
        """Undo :meth:`merge_adapter`, restoring the base weights."""
        self.base_model.unmerge_adapter()

    def merge_and_unload(
        self, progressbar: bool = False, safe_merge: bool = False, adapter_names: list[str] | None = None
    ) -> Any:
        """Merge the adapters (default: the active ones) into the base weights and return the
        plain base model; ``safe_merge`` as in :meth:`merge_adapter`."""
        self._refuse_merging_prompts(self.base_model.names_or_active(adapter_names))
        return self.base_model.merge_and_unload(progressbar, safe_merge=safe_merge, adapter_names=adapter_names)

    def unload(self) -> Any:
        """Remove every adapter without merging and return the plain base model."""
        return self.base_model.unload()

    def _refuse_merging_prompts(self, names: list[str]) -> None:
        prompts = [n for n in names if self.peft_config[n].is_prompt_learning]
        if prompts:
            raise PeftplugError(
                f"adapter {prompts[0]!r} is a prompt-learning adapter ({self._peft_method.name}): its virtual "
                "tokens are inputs, not weights, so there is nothing to merge; use unload() to get the base model back"
            )

    def get_base_model(self) -> Any:
        """The user's model inside this wrapper (with adapter layers in it until unloaded)."""
        return self.base_model.model

    # ---------------------------------------------------------------- running
    def generate(self, *args: Any, adapter_names: list[str] | None = None, **kwargs: Any) -> Any:
        """The user's model's ``generate``, with the active adapter applied (for prompt-learning
        methods: its virtual tokens, which the output never contains); with ``adapter_names``,
        one adapter per prompt (:mod:`peftplug.model.mixed_batch`)."""
        if adapter_names is not None:
            names = row_adapters(self, adapter_names, kwargs.get("num_beams"))
            with adapter_per_row(self, names):
                return self.get_base_model().generate(*args, **kwargs)
        if self._prompt_learning and not self._adapters_disabled:
            return self._prompt_generate(args, kwargs)
        return self.get_base_model().generate(*args, **kwargs)

    def _prompt_forward(self, args: tuple, kwargs: dict) -> Any:
        """The user's model's forward with the active prompt-learning adapter's virtual tokens."""
        raise NotImplementedError(f"{type(self).__name__} does not run prompt-learning adapters")

    def _prompt_generate(self, args: tuple, kwargs: dict) -> Any:
        """The user's model's ``generate`` with the active prompt-learning adapter's virtual tokens."""
        raise NotImplementedError(f"{type(self).__name__} does not run prompt-learning adapters")

    # ---------------------------------------------------------------- counting
    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(trainable parameters, all parameters), counted as HF PEFT counts them."""
        ops = self._peft_ops
        trainable = total = 0
        for _, parameter in ops.named_parameters(self):
            count = ops.numel(parameter)
            total += count
            if ops.is_trainable(parameter):
                trainable += count
        return trainable, total

    def print_trainable_parameters(self) -> None:
        """Print HF PEFT's line: trainable params, all params, trainable%."""
        trainable, total = self.get_nb_trainable_parameters()
        print(
            f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"
        )

    # ---------------------------------------------------------------- saving
    def adapter_state(self, adapter_name: str = DEFAULT_ADAPTER) -> AdapterState:
        """The adapter as an :class:`AdapterState`: HF PEFT keys and layout, numpy arrays."""
        self._check_adapter(adapter_name)
        config = self.peft_config[adapter_name]
        tensors, extra = {}, {}
        prefix = KEY_PREFIX
        if config.is_prompt_learning:
            prefix = PROMPT_KEY_PREFIX
            encoder = self._peft_ops.prompt_encoders(self)[adapter_name]
            tensors.update(encoder.export_prompt())
            extra = {ENCODER_KEY_PREFIX + key: value for key, value in encoder.export_encoder().items()}
        for name, layer in self._adapter_layers():
            if adapter_name in layer.adapter_names:
                for suffix, array in layer.export_adapter(adapter_name).items():
                    tensors[f"{prefix}{name}.{suffix}"] = array
        for name, parameter in self._trainable_biases(config):
            tensors[prefix + name] = self._peft_ops.to_numpy(parameter)
        return AdapterState(dataclasses.replace(config, inference_mode=True), tensors, extra)

    def save_pretrained(
        self,
        save_directory: str | Path,
        selected_adapters: list[str] | None = None,
        safe_serialization: bool = True,
        format: str = "peft",
        merge_tensor_parallel: bool | None = None,
        is_main_process: bool = True,
    ) -> None:
        """Save each adapter (default: all) as HF PEFT does: ``default`` in ``save_directory``,
        the others in subfolders named after them, and in HF PEFT's format its model card
        (``README.md``, an existing one updated). All the files are written atomically.

        On a sharded model (tensor parallel, ``fully_shard``) every rank must call it.
        ``merge_tensor_parallel`` (None: True when the model is sharded) gathers the shards to
        rank 0, which writes one ordinary adapter; False makes each rank write its own shard file
        (see :mod:`peftplug.distributed.tp_save`). On a replicated one (DDP, one process)
        ``is_main_process=False`` writes nothing, as in HF PEFT: pass ``rank == 0`` under DDP so
        that one process writes; it is ignored on a sharded model, where rank 0 writes.
        """
        names = selected_adapters or list(self.peft_config)
        for name in names:
            self._check_adapter(name)
        from peftplug.distributed.tp_save import group_of, save_merged, save_shards

        group = group_of(self)
        if group is None and not is_main_process:
            return
        if group is not None:
            directories = {
                name: Path(save_directory) if name == DEFAULT_ADAPTER else Path(save_directory) / name for name in names
            }
            save = save_shards if merge_tensor_parallel is False else save_merged
            save(self, group, directories, format, safe_serialization)
            return
        files: dict[str, FileContent] = {}
        for name in names:
            state = state_for_format(self.adapter_state(name), self.base_model.model, format)
            written = adapter_files(state, format, safe_serialization=safe_serialization, manager=self._peft_manager)
            files.update({(f"{name}/" if name != DEFAULT_ADAPTER else "") + file: c for file, c in written.items()})
        if self._peft_manager.formats.get(format).model_card:
            files[CARD_NAME] = self._model_card(Path(save_directory), names)
        folders = [Path(save_directory) / (name if name != DEFAULT_ADAPTER else "") for name in names]

        def replaced() -> list[Path]:
            return [path for folder in folders for path in replaced_adapter_files(folder, self._peft_manager)]

        write_files_atomically(Path(save_directory), files, replaces=replaced)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        safe_serialization: bool = True,
        selected_adapters: list[str] | None = None,
        format: str = "peft",
    ) -> Any:
        """Upload the adapter (not the base model) to the Hugging Face Hub, as HF PEFT does:
        :meth:`save_pretrained` into a temporary folder (same adapters, format and model card),
        then one commit of that folder to ``repo_id``, created if missing. Keywords are those of
        transformers' ``push_to_hub``; returns huggingface_hub's ``CommitInfo``. Needs the
        ``huggingface_hub`` package; a tensor-parallel model is refused (save it on every rank
        with :meth:`save_pretrained`, then upload the folder from one)."""
        import tempfile

        from peftplug.distributed.tp_save import group_of

        hub = _huggingface_hub()
        if group_of(self) is not None:
            raise PeftplugError(
                "push_to_hub on a tensor-parallel model: call save_pretrained(DIR) on every rank, then upload "
                "DIR from one rank (huggingface_hub.upload_folder)"
            )
        names = selected_adapters or list(self.peft_config)
        for name in names:
            self._check_adapter(name)
        api = hub.HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory(prefix="peftplug-push-") as work_dir:
            self.save_pretrained(work_dir, names, safe_serialization=safe_serialization, format=format)
            return api.upload_folder(
                repo_id=repo_id,
                folder_path=work_dir,
                commit_message=commit_message or "Upload model",
                commit_description=commit_description,
                token=token,
                revision=revision,
                create_pr=create_pr,
            )

    def _model_card(self, directory: Path, names: list[str]) -> bytes:
        """HF PEFT's README.md for this save: the card in ``directory`` updated, or a new one."""
        from peftplug import __version__
        from peftplug.model.model_card import card_tags, model_card

        path = directory / CARD_NAME
        existing = path.read_text(encoding="utf-8") if path.is_file() else None
        config = self.peft_config[self.active_adapter if self.active_adapter in names else names[0]]
        tags = card_tags(config, self.base_model.model, self._peft_method.card_tags)
        return model_card(existing, config, tags, __version__, str(path))

    # ---------------------------------------------------------------- injection
    def _inject(self, adapter_name: str, config: AdapterConfig) -> None:
        if self._peft_method.kind == "prompt":
            self._inject_prompt(adapter_name, config)
            return
        ops, manager, method = self._peft_ops, self._peft_manager, self._peft_method
        model = self.base_model.model
        config = _written_into(config, self._with_resolved_targets(config, model))
        manager.hook.peftplug_validate_config(config=config, model=model, backend=ops.name)
        modules = dict(ops.named_modules(model))
        targets = config.target_modules
        if targets == ALL_LINEAR:
            skipped = set(ops.output_layer_names(model))
            targets = [name for name, module in modules.items() if ops.is_linear(module) and name not in skipped]
        chosen = select_targets(
            modules,
            targets,
            exclude=getattr(config, "exclude_modules", None),
            layers_to_transform=getattr(config, "layers_to_transform", None),
            layers_pattern=getattr(config, "layers_pattern", None),
        )
        # Every layer is built before any is put in place: a target that cannot be adapted
        # leaves the model as it was.
        replacements = {}
        for name in chosen:
            layer = modules[name]
            wrapped = manager.wrap_layer(method.name, ops.name, layer, name, config, adapter_name)
            if wrapped is None:
                raise TargetModulesError(
                    f"module {name!r} ({type(layer).__name__}) matched target_modules, but no plugin "
                    f"implements {method.name} for that layer type on backend {ops.name!r}"
                )
            replacements[name] = wrapped
        for name, wrapped in replacements.items():
            if wrapped is not modules[name]:
                ops.replace_module(model, name, wrapped)
        self._wrap_modules_to_save(config, adapter_name, modules)
        self.peft_config[adapter_name] = config
        manager.hook.peftplug_adapter_injected(model=self, adapter_name=adapter_name, config=config, wrapped=chosen)

    def _inject_prompt(self, adapter_name: str, config: AdapterConfig) -> None:
        """Add a prompt-learning adapter: no layer is wrapped; the method's plugin builds the
        virtual-token encoder and the backend attaches it beside the (frozen) base model.

        A tensor-parallel base model is refused: its attention holds a share of the heads on each
        rank, while an encoder makes virtual tokens (prefix caches) for the whole model.
        """
        from peftplug.distributed.tp_save import group_of

        ops, manager, method = self._peft_ops, self._peft_manager, self._peft_method
        group = group_of(self)
        if group is not None:
            raise PeftplugError(
                f"{method.name} (a prompt-learning method) is not supported on a {group.engine} model "
                f"(this one is sharded over {group.degree} ranks): peftplug shards only layer adapters "
                "(methods whose tensors follow a layer's axes). Use one of those, or add the prompt adapter to the "
                "unsharded model, before sharding it where the engine allows that (README: Distributed training)"
            )
        model = self.base_model.model
        resolved = self._with_resolved_targets(config, model)
        if hasattr(resolved, "with_model_config"):
            resolved = resolved.with_model_config(ops.model_config(model))
        config = _written_into(config, resolved)
        manager.hook.peftplug_validate_config(config=config, model=model, backend=ops.name)
        encoder = manager.build_prompt_encoder(method.name, ops.name, config, model)
        if encoder is None:
            raise PeftplugError(f"no plugin builds the {method.name} prompt encoder on backend {ops.name!r}")
        ops.attach_prompt_encoder(self, adapter_name, encoder, config)
        self._wrap_modules_to_save(config, adapter_name, dict(ops.named_modules(model)))
        self.peft_config[adapter_name] = config
        manager.hook.peftplug_adapter_injected(model=self, adapter_name=adapter_name, config=config, wrapped=[])

    def _with_resolved_targets(self, config: AdapterConfig, model: Any) -> AdapterConfig:
        updates: dict[str, Any] = {}
        if getattr(config, "base_model_name_or_path", None) is None:
            updates["base_model_name_or_path"] = getattr(model, "name_or_path", None) or None
        if config.task_type == "SEQ_CLS" and hasattr(config, "modules_to_save"):
            extra = [m for m in CLASSIFIER_MODULES if m not in (config.modules_to_save or [])]
            updates["modules_to_save"] = list(config.modules_to_save or []) + extra
        config = dataclasses.replace(config, **updates) if updates else config
        defaults = self._default_targets(config, model)
        return config.with_default_targets(defaults) if defaults else config

    def _default_targets(self, config: AdapterConfig, model: Any) -> dict[str, list[str]]:
        """The model family's module names for each field of ``config.default_target_fields``
        left None (``target_modules``; IA3's ``feedforward_modules`` too)."""
        wanted = {
            field: key or self._peft_method.name
            for field, key in config.default_target_fields.items()
            if hasattr(config, field) and getattr(config, field) is None
        }
        if not wanted:
            return {}
        model_type = self._peft_ops.model_type(model)
        architecture = self._peft_manager.architecture_for_model_type(model_type)
        filled = {}
        for field, key in wanted.items():
            defaults = architecture.default_targets.get(key) if architecture else None
            if defaults is None:
                known = ", ".join(a.name for a in self._peft_manager.architectures if key in a.default_targets)
                raise ConfigError(
                    type(config).__name__,
                    field,
                    None,
                    f"no default targets for model_type {model_type!r} with {self._peft_method.name}; "
                    f"set {field} (families with defaults: {known})",
                )
            filled[field] = list(defaults)
        return filled

    def _wrap_modules_to_save(self, config: AdapterConfig, adapter_name: str, modules: dict[str, Any]) -> None:
        wanted = getattr(config, "modules_to_save", None) or []
        ops = self._peft_ops
        for name, module in modules.items():
            if not name or not any(name == m or name.endswith(f".{m}") for m in wanted):
                continue
            if not ops.is_adapter_layer(module):
                ops.replace_module(self.base_model.model, name, ops.wrap_module_to_save(module, adapter_name))
            elif hasattr(module, "add_copy"):
                module.add_copy(adapter_name)
            else:
                raise PeftplugError(f"module {name!r} is in modules_to_save and also an adapter target")

    # ---------------------------------------------------------------- helpers
    def _adapter_layers(self) -> Iterator[tuple[str, Any]]:
        return self.base_model.adapter_layers()

    def _freeze_base_model(self, config: AdapterConfig) -> None:
        """Freeze every parameter of the user's model but the biases ``config.bias`` trains
        (unless ``config.inference_mode``); the adapter layers then set their own."""
        ops = self._peft_ops
        for _, parameter in ops.named_parameters(self.base_model.model):
            ops.set_trainable(parameter, False)
        if not config.inference_mode:
            for _, parameter in self._trainable_biases(config):
                ops.set_trainable(parameter, True)

    def _set_prompt_encoders_trainable(self, inference_mode: bool | None = None) -> None:
        """Only the active prompt-learning adapter's encoder trainable, and not in inference mode."""
        if self._peft_method.kind != "prompt":
            return
        if inference_mode is None:
            inference_mode = self.peft_config[self.active_adapter].inference_mode
        for name, encoder in self._peft_ops.prompt_encoders(self).items():
            encoder.set_trainable(not inference_mode and name == self.active_adapter)

    def _trainable_biases(self, config: AdapterConfig) -> list[tuple[str, Any]]:
        """Biases that ``config.bias`` trains: none, all, or those of adapted layers."""
        mode = getattr(config, "bias", "none")
        if mode == "none":
            return []
        adapted = tuple(f"{name}.base_layer.bias" for name, _ in self._adapter_layers())
        return [
            (name, parameter)
            for name, parameter in self._peft_ops.named_parameters(self.base_model.model)
            if (mode == "all" and (name == "bias" or name.endswith(".bias"))) or name in adapted
        ]

    def _check_adapter(self, adapter_name: str) -> None:
        if adapter_name not in self.peft_config:
            known = ", ".join(self.peft_config) or "none"
            raise PeftplugError(f"no adapter named {adapter_name!r}; this model has: {known}")

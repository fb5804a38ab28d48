"""What the model needs around it that is not the architecture: errors that name a damaged checkpoint's file, and a
`forward` signature that names the main input first, as transformers' tools read it.

This file travels with the modeling code when a model is saved for `trust_remote_code`, so it imports only the
standard library, safetensors and transformers.
"""

from __future__ import annotations

import inspect
import json
import types
from collections.abc import Callable

from safetensors import SafetensorError, safe_open
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, cached_file


# The arguments of `from_pretrained` that say where a checkpoint's files are.
HUB_ARGUMENTS = ("cache_dir", "force_download", "revision", "token", "local_files_only", "subfolder")


def unreadable_weights(source, hub_arguments: dict) -> list[str]:
    """The safetensors files of the checkpoint at `source` (a folder or a repository already downloaded) that do not
    open: truncated or corrupt."""
    where = {**hub_arguments, "_raise_exceptions_for_missing_entries": False,
             "_raise_exceptions_for_connection_errors": False}
    names = [SAFE_WEIGHTS_NAME]
    index = cached_file(source, SAFE_WEIGHTS_INDEX_NAME, **where)
    if index is not None:
        with open(index) as file:
            names = sorted(set(json.load(file)["weight_map"].values()))
    unreadable = []
    for path in filter(None, (cached_file(source, name, **where) for name in names)):
        try:
            with safe_open(path, framework="pt"):
                pass
        except SafetensorError:
            unreadable.append(path)
    return unreadable


def corrupt_checkpoint_error(source, hub_arguments: dict, error: SafetensorError) -> OSError:
    """The error to raise when safetensors cannot read a checkpoint's weights: which file, and what to do."""
    files = unreadable_weights(source, hub_arguments) or [f"the weights of {source}"]
    return OSError(
        f"{' and '.join(map(str, files))} cannot be read: the file is truncated or corrupt (safetensors: {error}); "
        "save the model again with save_pretrained, or download it again (from_pretrained(..., "
        "force_download=True) for a Hub repository)"
    )


def main_input_first(name: str) -> Callable[[Callable], Callable]:
    """Decorate a `forward(self, inputs=None, /, *, pixel_values=None, input_ids=None, ..., points=None, ...)`, which
    takes the main input positionally or by its keyword, so that its signature names that first parameter after the
    main input `name`: `forward(self, <name>=None, *, ...)`, as transformers expects the first parameter of `forward`
    to be `main_input_name` (`inspect.signature`). The code is the same; only the signature shown differs, and it
    accepts the same calls."""

    def decorate(forward: Callable) -> Callable:
        renamed = types.FunctionType(
            forward.__code__, forward.__globals__, forward.__name__, forward.__defaults__, forward.__closure__
        )
        renamed.__kwdefaults__ = forward.__kwdefaults__
        for attribute in ("__doc__", "__qualname__", "__module__", "__annotations__"):
            setattr(renamed, attribute, getattr(forward, attribute))
        self_parameter, _, *keywords = inspect.signature(renamed).parameters.values()  # the code's own signature
        main = next(parameter for parameter in keywords if parameter.name == name)
        others = [parameter for parameter in keywords if parameter.name != name]
        main = main.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD)
        renamed.__signature__ = inspect.signature(renamed).replace(parameters=[self_parameter, main, *others])
        return renamed

    return decorate


__all__ = ["HUB_ARGUMENTS", "corrupt_checkpoint_error", "main_input_first", "unreadable_weights"]

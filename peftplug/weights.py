"""Kept for ``from peftplug.weights import copy_base_weights``: the code is in
:mod:`peftplug.interop.weights`."""

from peftplug.interop.weights import copy_base_weights

__all__ = ["copy_base_weights"]

"""The PaddlePaddle backend plugin. Registers the backend and detects Paddle models; paddle
itself is imported only when a Paddle model is used (by then the user has imported it)."""

from __future__ import annotations

import sys
from typing import Any

from peftplug.markers import hookimpl
from peftplug.registration import Backend


@hookimpl
def peftplug_register_backends() -> Backend:
    """The ``paddle`` backend, implemented in :mod:`peftplug.backends.paddle.ops`."""
    return Backend(
        name="paddle",
        implementation="peftplug.backends.paddle.ops:PaddleBackend",
        convention="paddle",
        description="PaddlePaddle (paddle.nn.Layer models, PaddleNLP models)",
    )


@hookimpl
def peftplug_detect_backend(model: Any) -> str | None:
    """``"paddle"`` for a ``paddle.nn.Layer``; never imports paddle to find out."""
    paddle = sys.modules.get("paddle")
    if paddle is not None and isinstance(model, paddle.nn.Layer):
        return "paddle"
    return None

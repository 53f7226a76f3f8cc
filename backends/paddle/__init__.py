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
        requires=("paddle", "paddlenlp"),
        extra="peftplug[paddle]",
        # Paddle's and PaddleNLP's own warnings, and setuptools' distutils shim that importing
        # Paddle trips: nothing in them is the user's to act on.
        quiet_packages=("paddle", "paddlenlp", "_distutils_hack"),
        recipe_runner="peftplug.backends.paddle.recipe:run",
        model_builder="peftplug.backends.paddle.app_models:MODELS",
        generator="peftplug.backends.paddle.generate:generate",
        test_driver="peftplug.backends.paddle.testing:PaddleDriver",
        description="PaddlePaddle (paddle.nn.Layer models, PaddleNLP models)",
    )


@hookimpl
def peftplug_detect_backend(model: Any) -> str | None:
    """``"paddle"`` for a ``paddle.nn.Layer``; never imports paddle to find out."""
    paddle = sys.modules.get("paddle")
    if paddle is not None and isinstance(model, paddle.nn.Layer):
        return "paddle"
    return None

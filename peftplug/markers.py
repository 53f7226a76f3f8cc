"""The two pluggy markers of the ``peftplug`` project.

Built-in plugins and third-party packages use the same :data:`hookimpl`; the specs in
:mod:`peftplug.hookspecs` use :data:`hookspec`.
"""

import pluggy

PROJECT_NAME = "peftplug"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

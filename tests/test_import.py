"""``import peftplug`` must not import a framework."""

from __future__ import annotations

import subprocess
import sys


def test_import_peftplug_loads_neither_torch_nor_paddle():
    code = (
        "import sys, peftplug; pm = peftplug.get_plugin_manager(); "
        "assert pm.backends.names() and pm.methods.names() and pm.formats.names(); "
        "loaded = {'torch', 'paddle'} & set(sys.modules); assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

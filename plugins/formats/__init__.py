"""Built-in on-disk formats: one plugin per format; the other modules are their shared helpers.

``PLUGIN_MODULES`` names the plugins (relative to this package), in the order formats are tried
when a directory's format is detected. Built-in plugin discovery (:mod:`peftplug.discovery`)
reads it from this file's source, so it stays a literal tuple.
"""

PLUGIN_MODULES = ("peft", "paddlenlp")

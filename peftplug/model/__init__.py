"""The model API: ``PeftModel`` and the layers, encoders and wrappers it is written with, once for
every backend, over the operations a backend registers (:class:`peftplug.backend.BackendOps`)."""

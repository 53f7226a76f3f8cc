"""The application: the ``peftplug`` command line, recipes and the built-in training job. The only
layer that may import a framework at module level, and only inside a backend's own runner."""

"""Built-in backends: one package per framework. Importing this package imports no framework."""

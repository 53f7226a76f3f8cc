"""Built-in plugins: one package per method, plus formats and architectures."""

"""Built-in on-disk formats."""

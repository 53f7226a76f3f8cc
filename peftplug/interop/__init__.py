"""Interop: adapters and base weights moved between the naming conventions of the registered
frameworks (HF transformers', PaddleNLP's), reading what architectures and methods declare."""

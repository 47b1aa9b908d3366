"""dcod: reference replication of Distribution Corrected Offline Data Distillation for LLMs."""

__version__ = "0.1.0"

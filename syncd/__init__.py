"""syncd: move LowDB files and QuestDB tables into PostgreSQL without downtime, and back."""

__version__ = "0.1.0"

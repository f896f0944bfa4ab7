"""guard: a self-hosted safety and moderation service for LLM applications."""

__version__ = "0.1.0"

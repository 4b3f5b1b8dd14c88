"""The InMemory backend: its channel layer and everything else the service needs of InMemory."""

from .layer import InMemoryChannelLayer

__all__ = ["InMemoryChannelLayer"]

"""The Redis backend: its channel layer and everything else the service needs of Redis."""

from .layer import RedisChannelLayer

__all__ = ["RedisChannelLayer"]

"""The NATS backend: its channel layer and everything else the service needs of NATS."""

from .layer import NATSChannelLayer

__all__ = ["NATSChannelLayer"]

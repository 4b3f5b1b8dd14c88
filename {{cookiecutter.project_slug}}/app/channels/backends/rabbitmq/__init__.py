"""The RabbitMQ backend: its channel layer and everything else the service needs of RabbitMQ."""

from .layer import RabbitMQChannelLayer

__all__ = ["RabbitMQChannelLayer"]

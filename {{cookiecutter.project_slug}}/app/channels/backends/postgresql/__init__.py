"""The PostgreSQL backend: its channel layer and everything else the service needs of PostgreSQL."""

from .layer import PostgreSQLChannelLayer

__all__ = ["PostgreSQLChannelLayer"]

"""Errors raised by the channel layer. Each one names what was wrong."""

from __future__ import annotations


class ChannelLayerError(Exception):
    """Base class of every channel layer error."""


class ConfigurationError(ChannelLayerError, ValueError):
    """The layer configuration (dict or environment) is malformed."""


class BackendNotInstalled(ChannelLayerError, ImportError):
    """A backend's broker client is missing; the message names the extra to install."""


class InvalidChannelName(ChannelLayerError, TypeError):
    """A channel or group name breaks the naming rules."""


class InvalidMessage(ChannelLayerError, TypeError):
    """A message is not a dict with a string ``type``."""


class SerializationError(ChannelLayerError, TypeError):
    """A message holds a value the wire format cannot carry."""


class MessageTooLarge(ChannelLayerError, ValueError):
    """A serialized message exceeds ``max_message_size``."""


class ChannelFull(ChannelLayerError):
    """The channel holds ``capacity`` undelivered messages already."""


class LayerClosed(ChannelLayerError, RuntimeError):
    """The layer was closed; create a new one."""


class BrokerUnavailable(ChannelLayerError, ConnectionError):
    """The broker could not be reached; the operation did not happen."""

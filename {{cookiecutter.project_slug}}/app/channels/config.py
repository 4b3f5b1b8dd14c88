"""Build layers from a CHANNEL_LAYERS-style dict or from ``FASTAPI_WEBSOCKETS_*`` variables."""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from .base import BaseChannelLayer
from .exceptions import ConfigurationError

ENV_PREFIX = "FASTAPI_WEBSOCKETS_"

BACKENDS = {
    "inmemory": "app.channels.backends.inmemory.InMemoryChannelLayer",
    "redis": "app.channels.backends.redis.RedisChannelLayer",
    "postgresql": "app.channels.backends.postgresql.PostgreSQLChannelLayer",
    "nats": "app.channels.backends.nats.NATSChannelLayer",
    "rabbitmq": "app.channels.backends.rabbitmq.RabbitMQChannelLayer",
}


def import_backend(path: str) -> type[BaseChannelLayer]:
    """Resolve a short backend name or a dotted path to a layer class."""
    dotted = BACKENDS.get(path.lower(), path)
    module_name, _, class_name = dotted.rpartition(".")
    if not module_name or module_name.startswith("."):
        raise ConfigurationError(
            f"unknown channel layer backend {path!r}: use one of {', '.join(BACKENDS)} or a dotted path"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigurationError(f"unknown channel layer backend {path!r}: no module {module_name!r}") from exc
        raise
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseChannelLayer)):
        raise ConfigurationError(f"backend {dotted!r} is not a channel layer class")
    return cls


def _config_keys(cls: type[BaseChannelLayer]) -> set[str]:
    keys: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            keys |= {p.name for p in inspect.signature(init).parameters.values() if p.kind is p.KEYWORD_ONLY}
    return keys


def build_layer(backend: str, config: Mapping[str, Any] | None = None) -> BaseChannelLayer:
    cls = import_backend(backend)
    config = dict(config or {})
    unknown = sorted(set(config) - _config_keys(cls))
    if unknown:
        raise ConfigurationError(
            f"unknown CONFIG key(s) {', '.join(map(repr, unknown))} for {cls.__name__};"
            f" accepted: {', '.join(sorted(_config_keys(cls)))}"
        )
    return cls(**config)


def get_channel_layer(
    config: Mapping[str, Mapping[str, Any]] | None = None, alias: str = "default"
) -> BaseChannelLayer:
    """Create the layer ``alias`` of a ``CHANNEL_LAYERS`` dict; without one, from the environment.

    Create it once per process and reuse it: it owns the broker connections.
    """
    if config is None:
        return get_channel_layer_from_env(alias)
    if alias not in config:
        have = ", ".join(config) or "none"
        raise ConfigurationError(f"no channel layer alias {alias!r} in the config (have: {have})")
    entry = config[alias]
    if not isinstance(entry, Mapping) or "BACKEND" not in entry:
        raise ConfigurationError(f"channel layer {alias!r} needs a 'BACKEND' key")
    extra = set(entry) - {"BACKEND", "CONFIG"}
    if extra:
        raise ConfigurationError(f"channel layer {alias!r} has unknown key(s): {', '.join(sorted(extra))}")
    return build_layer(entry["BACKEND"], entry.get("CONFIG"))


class _Selector(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")
    backend: str = "inmemory"


def env_prefix(alias: str = "default", environ: Mapping[str, str] | None = None) -> str:
    """``FASTAPI_WEBSOCKETS_`` alone, or with the alias when ``FASTAPI_WEBSOCKETS_ALIASES`` is set."""
    environ = os.environ if environ is None else environ
    aliases = [a.strip() for a in environ.get(f"{ENV_PREFIX}ALIASES", "").split(",") if a.strip()]
    if not aliases:
        if alias != "default":
            raise ConfigurationError(f"alias {alias!r} needs FASTAPI_WEBSOCKETS_ALIASES to list it")
        return ENV_PREFIX
    if alias not in aliases:
        raise ConfigurationError(f"alias {alias!r} is not in FASTAPI_WEBSOCKETS_ALIASES={','.join(aliases)}")
    return f"{ENV_PREFIX}{alias.upper()}_"


def config_from_env(alias: str = "default") -> dict[str, Any]:
    """The ``{"BACKEND": ..., "CONFIG": ...}`` entry the environment describes."""
    prefix = env_prefix(alias)
    backend = _read_env(_Selector, prefix).backend
    cls = import_backend(backend)
    short = next((name for name, path in BACKENDS.items() if path.endswith(f".{cls.__name__}")), None)
    config: dict[str, Any] = {}
    if cls.env_model is not None and short is not None:
        config = _read_env(cls.env_model, f"{prefix}{short.upper()}_").model_dump(exclude_none=True)
    return {"BACKEND": backend, "CONFIG": config}


def _read_env(model: type[Any], prefix: str) -> Any:
    """Instantiate a settings model from ``prefix``-ed variables; errors name the variable."""
    try:
        return model(_env_prefix=prefix, _env_parse_none_str="")
    except ValidationError as exc:
        problems = "; ".join(f"{prefix}{str(err['loc'][0]).upper()}: {err['msg']}" for err in exc.errors())
        raise ConfigurationError(f"invalid channel layer environment: {problems}") from None


def get_channel_layer_from_env(alias: str = "default") -> BaseChannelLayer:
    """Create the layer the ``FASTAPI_WEBSOCKETS_*`` variables describe."""
    entry = config_from_env(alias)
    return build_layer(entry["BACKEND"], entry["CONFIG"])

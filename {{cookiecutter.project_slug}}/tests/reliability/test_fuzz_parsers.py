"""Hostile input to the pure parsers: each raises only its own documented error, whatever it is fed."""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.channels.config import BACKENDS, config_from_env, import_backend
from app.channels.exceptions import ConfigurationError, InvalidChannelName
from app.channels.names import validate_channel, validate_group
from app.chat.protocol import InvalidFrame, parse_client_frame

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FRAME_TYPES = ["join", "leave", "message", "typing", "direct", "rooms", "who", "ping", "share"]
FIELDS = ["type", "room", "text", "typing", "to", "mime", "extra", ""]

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=50),
                    st.sampled_from(FRAME_TYPES), st.sampled_from(["lobby", "a" * 33, "image/png", "x" * 4001]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=5),
                           max_leaves=30)
frames = st.fixed_dictionaries({"type": st.sampled_from(FRAME_TYPES) | scalars},
                               optional={name: json_values for name in FIELDS[1:]})


@FUZZ
@given(st.one_of(json_values, frames))
def test_parse_client_frame_raises_only_invalid_frame(content: Any) -> None:
    try:
        frame = parse_client_frame(content)
    except InvalidFrame as exc:
        assert str(exc)
        return
    assert frame.type in FRAME_TYPES
    json.dumps(frame.model_dump())  # what was accepted is plain JSON again


@FUZZ
@given(st.text(max_size=200))
def test_parse_client_frame_of_json_text(text: str) -> None:
    try:
        content = json.loads(text)
    except ValueError:
        return
    try:
        parse_client_frame(content)
    except InvalidFrame:
        return
    assert isinstance(content, dict)


names = st.one_of(st.text(max_size=120), st.text(alphabet="abcXYZ09-_.:!", max_size=120), st.binary(max_size=20),
                  st.integers(), st.none(), st.lists(st.text(max_size=3), max_size=2))


@FUZZ
@given(names)
def test_channel_and_group_names_raise_only_invalid_channel_name(name: Any) -> None:
    for validate in (validate_channel, validate_group):
        try:
            assert validate(name) == name
        except InvalidChannelName as exc:
            assert str(exc)


def _importable_top_level(path: str) -> bool:
    """A dotted path whose first part is a real module: importing it could run anything, so skip those."""
    head = path.split(".")[0]
    try:
        return bool(head) and importlib.util.find_spec(head) is not None
    except (ImportError, ValueError):
        return False


RELATIVE_BACKENDS = ["..x", ".redis.RedisChannelLayer"]  # a relative module part is refused
_SAFE_ODD_BACKENDS = [".", ".x", "x.", "app.channels.base.BaseChannelLayer", "app.channels.exceptions.ChannelFull",
                      "app.channels.config.BACKENDS", "app.channels.nope.Layer", "app.Nope", " redis", "REDIS", "\x00"]
backends = st.one_of(st.sampled_from([*BACKENDS, *_SAFE_ODD_BACKENDS]),
                     st.text(max_size=30).filter(
    lambda path: not path.rpartition(".")[0].startswith(".") and not _importable_top_level(path)))
env_values = st.one_of(st.text(max_size=40), st.sampled_from(["", "0", "-1", "1e309", "nan", "inf", "true", "[]", "{}",
                                                              "null", "redis://", "nats://x:-1", "a,b,,c", " 10 "]))


def _env_keys() -> list[str]:
    keys = ["FASTAPI_WEBSOCKETS_ALIASES"]
    for short in BACKENDS:
        try:
            model = import_backend(short).env_model
        except Exception:  # a backend whose client is not installed has no keys to fuzz
            continue
        keys += [f"FASTAPI_WEBSOCKETS_{short.upper()}_{field.upper()}" for field in getattr(model, "model_fields", {})]
    return keys


ENV_KEYS = _env_keys()


@FUZZ
@given(backend=backends, values=st.dictionaries(st.sampled_from(ENV_KEYS), env_values, max_size=6))
def test_config_from_env_raises_only_configuration_error(backend: str, values: dict[str, str]) -> None:
    with pytest.MonkeyPatch.context() as env:
        for key in [k for k in os.environ if k.startswith("FASTAPI_WEBSOCKETS_")]:
            env.delenv(key)
        if "\x00" not in backend:
            env.setenv("FASTAPI_WEBSOCKETS_BACKEND", backend)
        for key, value in values.items():
            if "\x00" not in value:
                env.setenv(key, value)
        try:
            entry = config_from_env()
        except ConfigurationError as exc:
            assert str(exc)
            return
        assert set(entry) == {"BACKEND", "CONFIG"}


@pytest.mark.parametrize("backend", RELATIVE_BACKENDS)
def test_relative_backend_path_is_a_configuration_error(backend: str) -> None:
    with pytest.raises(ConfigurationError):
        import_backend(backend)

from __future__ import annotations

import pytest

from app.channels.exceptions import InvalidChannelName
from app.channels.names import process_of, validate_channel, validate_group


@pytest.mark.parametrize("name", ["room:demo", "a", "chat.room-1_x", "specific.abc!def", "specific.abc!", "x" * 99])
def test_valid_channel_names(name: str) -> None:
    assert validate_channel(name) == name


@pytest.mark.parametrize(
    "name", ["", "has space", "a/b", "a*b", "a>b", "a;b", "naïve", "a!b!c", "x" * 100, "tab\t", "new\nline"]
)
def test_invalid_channel_names_quote_the_name(name: str) -> None:
    with pytest.raises(InvalidChannelName) as error:
        validate_channel(name)
    assert repr(name) in str(error.value)


@pytest.mark.parametrize("name", [None, 3, b"bytes"])
def test_names_must_be_strings(name: object) -> None:
    with pytest.raises(InvalidChannelName, match="must be a str"):
        validate_channel(name)


def test_group_names_have_no_bang() -> None:
    assert validate_group("room:demo") == "room:demo"
    with pytest.raises(InvalidChannelName):
        validate_group("a!b")


def test_process_of() -> None:
    assert process_of("ws.0123abcd!xyz") == "0123abcd"
    assert process_of("specific.a.b.proc!t") == "proc"

"""The bounded memory behind job-message dedup and encode-once."""

from __future__ import annotations

from app.chat.recent import Recent


def test_first_time_and_get_or_make_forget_the_oldest() -> None:
    recent = Recent(size=2)
    assert recent.first_time("a") and not recent.first_time("a")
    made: list[str] = []

    def make(value: str) -> str:
        made.append(value)
        return value

    assert recent.get_or_make("b", lambda: make("B")) == "B"
    assert recent.get_or_make("b", lambda: make("X")) == "B" and made == ["B"]
    recent.first_time("c")  # "a" is the oldest of three: forgotten
    assert recent.first_time("a")

"""The backends' shared chores (app/channels/broker.py)."""

from __future__ import annotations

import pytest

from app.channels import BrokerUnavailable, ConfigurationError
from app.channels.broker import Backoff, BrokerEnv, broker_errors, redact_url, require_positive


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("amqp://chat:s3cret@rabbit/vhost", "amqp://chat:***@rabbit/vhost"),
        ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://postgres@127.0.0.1:5432/test"),
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("redis://:s3cret@[::1", "<unparsable address>"),
        ("host=db user=chat password=s3cret dbname=chat", "host=db user=chat password=*** dbname=chat"),
        ("host=db password='s3cret with spaces' port=5432", "host=db password=*** port=5432"),
    ],
)
def test_redact_url_hides_only_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url)


def test_require_positive_names_the_key() -> None:
    require_positive(capacity=1, expiry=0.5, unset=None)
    with pytest.raises(ConfigurationError, match="receive_timeout must be positive, got 0"):
        require_positive(capacity=1, receive_timeout=0)


def test_broker_errors_become_broker_unavailable_naming_where() -> None:
    class ClientError(Exception):
        pass

    where = "Redis at redis://:***@h:1/0"
    with pytest.raises(BrokerUnavailable, match=r"redis://:\*\*\*@h:1/0 is unavailable: ClientError"), broker_errors(
        where, ClientError
    ):
        raise ClientError("down")
    with pytest.raises(BrokerUnavailable, match="NATS is unavailable: ConnectionRefusedError"), broker_errors("NATS"):
        raise ConnectionRefusedError("refused")
    with pytest.raises(ValueError, match="a bug"), broker_errors("x", ClientError):
        raise ValueError("a bug, not an outage")
    original = BrokerUnavailable("said by the backend itself")
    with pytest.raises(BrokerUnavailable) as raised, broker_errors("x"):
        raise original
    assert raised.value is original


def test_backoff_doubles_to_its_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(0.1, 0.4)
    delays = [backoff.next() for _ in range(5)]
    for delay, base in zip(delays, (0.1, 0.2, 0.4, 0.4, 0.4), strict=True):
        assert 0.8 * base <= delay <= 1.2 * base
    backoff.reset()
    assert backoff.next() <= 0.12


def test_broker_env_reads_common_fields_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_CAPACITY", "7")
    monkeypatch.setenv("X_CHANNEL_EXPIRY", "30")
    monkeypatch.setenv("X_RECEIVE_TIMEOUT", "2.5")
    env = BrokerEnv(_env_prefix="X_")  # type: ignore[call-arg]
    assert env.model_dump(exclude_none=True) == {"capacity": 7, "channel_expiry": 30.0, "receive_timeout": 2.5}


def test_encryption_keys_come_comma_separated_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_SYMMETRIC_ENCRYPTION_KEYS", "new-key, old-key")
    assert BrokerEnv(_env_prefix="X_").symmetric_encryption_keys == ["new-key", "old-key"]  # type: ignore[call-arg]
    monkeypatch.setenv("X_SYMMETRIC_ENCRYPTION_KEYS", "")
    assert BrokerEnv(_env_prefix="X_").symmetric_encryption_keys is None  # type: ignore[call-arg]

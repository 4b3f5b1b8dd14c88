"""Service settings from ``APP_*`` environment variables (and ``.env`` beside pyproject.toml).

The channel layer reads its own ``FASTAPI_WEBSOCKETS_*`` variables (see app/channels/config.py);
``.env`` is loaded into the environment first, without overriding what is already set.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from dotenv import load_dotenv
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent
INSECURE_SECRET = "insecure-development-secret-change-me"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APP_", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    secret_key: SecretStr = SecretStr(INSECURE_SECRET)
    token_ttl_seconds: int = Field(3600, gt=0)
    #: Origins allowed to open a WebSocket; empty: only the page's own host.
    allowed_origins: Annotated[list[str], NoDecode] = []
    #: The relational store: SQLite (aiosqlite) embedded, PostgreSQL (postgresql+asyncpg://) with many workers.
    database_url: SecretStr = SecretStr(f"sqlite+aiosqlite:///{ROOT / 'chat.db'}")
    #: Stored messages a ``joined`` frame carries (the room's latest).
    history_size: int = Field(50, ge=0, le=1000)
    #: Messages a ``join`` with ``since`` (or a ``sync``) recovers at most; beyond, the latest with recovered=false.
    recovery_limit: int = Field(500, gt=0, le=10_000)
    #: Stored messages older than this are pruned (hourly, by one worker at a time).
    message_retention_days: float = Field(30, gt=0)
    max_text_frame_bytes: int = Field(16 * 1024, gt=0)
    max_binary_frame_bytes: int = Field(256 * 1024, gt=0)
    rate_limit_per_second: float = Field(10.0, gt=0)
    rate_limit_burst: int = Field(30, gt=0)
    #: Seconds without any frame from a client before it counts as dead.
    idle_timeout_seconds: float = Field(60.0, gt=0)
    presence_interval_seconds: float = Field(5.0, gt=0)
    #: Names a ``joined`` or ``members`` frame lists at most (the first by name; ``count`` says how many in all).
    member_list_limit: int = Field(100, ge=0, le=10_000)
    #: Frames / bytes held for a socket that does not keep up before it is closed (1013).
    send_queue_size: int = Field(256, gt=0)
    send_queue_bytes: int = Field(64 * 1024, gt=0)
    #: Frames queued for a busy socket leave as one JSON array of up to this many (1: one frame each).
    send_batch_frames: int = Field(64, gt=0)
    log_level: str = "INFO"
    log_json: bool | None = None  # default: JSON in production
    # accounts and limits (docs/accounts.md)
    #: ``local``: accounts with passwords here; ``oidc``: tokens of APP_OIDC_ISSUER (signup/login answer 404).
    auth_mode: Literal["local", "oidc"] = "local"
    token_issuer: str = "realtime-chat"
    token_audience: str = "realtime-chat"
    password_min_length: int = Field(8, ge=1, le=128)
    #: Comma list of user names that are admins (applied at signup and login).
    admin_usernames: Annotated[list[str], NoDecode] = []
    oidc_issuer: str = ""
    oidc_audience: str = ""
    oidc_username_claim: str = "preferred_username"
    #: Default: the ``jwks_uri`` of the issuer's /.well-known/openid-configuration.
    oidc_jwks_url: str = ""
    #: A token with an unknown key id refetches the key set, at most once per this many seconds.
    oidc_refetch_cooldown_seconds: float = Field(30.0, ge=0)
    #: Seconds a new socket has to send its ``auth`` frame.
    auth_timeout_seconds: float = Field(10.0, gt=0)
    login_attempts_per_username: int = Field(5, gt=0)
    login_attempts_per_address: int = Field(50, gt=0)
    login_throttle_window_seconds: float = Field(300.0, gt=0)
    #: Open sockets per user, counted across workers (close 4008 beyond).
    max_connections_per_user: int = Field(10, gt=0)
    #: Rooms a user is in at once, over all their sockets.
    max_rooms_per_user: int = Field(20, gt=0)
    #: New sockets per second from one client address, per worker (burst: 10 seconds' worth).
    handshake_rate_per_address: float = Field(20.0, gt=0)
    #: Bearer token of machines in the deployment: Prometheus (/metrics), the Celery worker (GET /api/rooms).
    service_token: SecretStr = SecretStr("")
    #: Binary bytes one socket may share over its life (close 4008 beyond).
    share_budget_bytes: int = Field(8 * 1024 * 1024, gt=0)

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip().rstrip("/") for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("admin_usernames", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list):
            return [str(name).strip().lower() for name in value if str(name).strip()]
        return value

    @model_validator(mode="after")
    def _production_needs_secrets(self) -> Settings:
        if self.environment == "production" and self.secret_key.get_secret_value() == INSECURE_SECRET:
            raise ValueError("APP_SECRET_KEY must be set when APP_ENVIRONMENT=production")
        if self.environment == "production" and len(self.secret_key.get_secret_value()) < 32:
            raise ValueError("APP_SECRET_KEY must be at least 32 characters in production")
        return self

    @property
    def json_logs(self) -> bool:
        return self.environment == "production" if self.log_json is None else self.log_json


@lru_cache
def get_settings() -> Settings:
    load_dotenv(ROOT / ".env", override=False)
    return Settings()

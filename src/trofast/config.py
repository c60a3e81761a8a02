"""Settings, from the environment (TROFAST_*) or arguments."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TROFAST_")

    database_url: str = "sqlite:///trofast.db"
    run_worker: bool = True
    worker_interval_seconds: float = 30.0
    pool_size: int = 16

"""Database lifecycle: tortoise configuration, migrations, and the connection context."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

from tortoise.context import TortoiseContext
from tortoise.migrations.api import migrate

MODELS_MODULE: Final = "gateway.store.models"
MIGRATIONS_MODULE: Final = "gateway.store.migrations"


def tortoise_config(url: str) -> dict[str, Any]:
    """The tortoise configuration for one database URL (sqlite://path or postgres://...)."""
    if url.startswith("sqlite://") and url != "sqlite://:memory:":
        Path(url.removeprefix("sqlite://")).parent.mkdir(parents=True, exist_ok=True)
    return {
        "connections": {"default": url},
        "apps": {
            "models": {
                "models": [MODELS_MODULE],
                "default_connection": "default",
                "migrations": MIGRATIONS_MODULE,
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


#: For the `tortoise makemigrations` developer command only (python -m tortoise -c gateway.store.db.TORTOISE_ORM).
TORTOISE_ORM: Final = tortoise_config("sqlite://var/makemigrations.sqlite3")


async def apply_migrations(url: str) -> None:
    """Bring the schema up to date with tortoise's built-in migrations (idempotent)."""
    async with TortoiseContext():
        await migrate(config=tortoise_config(url))


@asynccontextmanager
async def open_database(url: str) -> AsyncIterator[TortoiseContext]:
    """Migrate, then hold the connections for the lifetime of the block (the process-wide context)."""
    await apply_migrations(url)
    async with TortoiseContext() as ctx:
        await ctx.init(config=tortoise_config(url), _enable_global_fallback=True)
        yield ctx

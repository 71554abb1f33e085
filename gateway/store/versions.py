"""Versioned operator documents (escalation directory, site map): every validated text kept, the newest wins."""

from __future__ import annotations

from datetime import UTC, datetime

import structlog

from gateway.store.models import DirectoryVersion, SiteMapVersion

log = structlog.get_logger(__name__)

#: The tables that keep a document's versions (same columns).
VersionTable = type[DirectoryVersion] | type[SiteMapVersion]


async def latest_version(table: VersionTable) -> tuple[int, str | None]:
    """The newest stored document and its version; (0, None) when none was stored."""
    latest = await table.all().order_by("-id").first()
    return (0, None) if latest is None else (int(latest.id), latest.document)


async def save_version(table: VersionTable, document: str, *, source: str, loaded_by: str) -> int | None:
    """Store `document` as the newest version unless it equals the current one; the new version, or None."""
    _, current = await latest_version(table)
    if current == document:
        return None
    row = await table.create(
        document=document, source=source[:255], loaded_by=loaded_by[:64], loaded_at=datetime.now(UTC)
    )
    log.info("document version stored", table=table._meta.db_table, version=row.id, source=source, by=loaded_by)
    return int(row.id)

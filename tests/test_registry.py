"""The hot path's device cache follows the registry: revocations and new registrations reach it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.identity.pki import PkiLayout
from gateway.identity.trust import load_device_trust
from gateway.store.db import open_database
from gateway.store.registry import DeviceDirectory, DeviceRegistry
from tests.conftest import enroll


async def test_revocation_reaches_the_cache_on_refresh(pki: PkiLayout, db_url: str) -> None:
    async with open_database(db_url):
        trust = load_device_trust(pki)
        directory = DeviceDirectory(trust)
        w = await enroll(pki)
        now = datetime.now(UTC)
        before = await directory.get(w.device_id, now)
        assert before is not None and not before.revoked
        await DeviceRegistry(trust).revoke(w.device_id, "lost", now)
        assert (await directory.get(w.device_id, now)) is before, "cached until the next refresh"
        await directory.refresh()
        after = await directory.get(w.device_id, now)
        assert after is not None and after.revoked


async def test_a_device_registered_while_running_is_found(pki: PkiLayout, db_url: str) -> None:
    async with open_database(db_url):
        directory = DeviceDirectory(load_device_trust(pki))
        assert await directory.get("late-comer", datetime.now(UTC)) is None
        await enroll(pki, "late-comer")
        await directory.refresh()
        creds = await directory.get("late-comer", datetime.now(UTC))
        assert creds is not None and creds.trust_problem is None


async def test_a_certificate_from_another_ca_is_refused_at_registration(pki: PkiLayout, db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from gateway.errors import RegistryError
    from gateway.identity.pki import init_pki, issue_device_files, load_certificate

    other = PkiLayout(tmp_path / "other")
    init_pki(other)
    cert, _ = issue_device_files(other, "rogue-1")
    async with open_database(db_url):
        registry = DeviceRegistry(load_device_trust(pki))
        with pytest.raises(RegistryError, match="certificate refused"):
            await registry.add(load_certificate(cert), wearer="x", site="", phone="", now=datetime.now(UTC))

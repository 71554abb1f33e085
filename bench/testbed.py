"""The bench's world: a throwaway PKI, a fresh PostgreSQL database, enrolled devices and a gateway process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self

import aiohttp
import asyncpg
from cryptography.hazmat.primitives import serialization

from bench import const
from bench.broker import clear_prefix, end_session
from gateway.commandcenter.const import CLIENT_ID_PREFIX
from gateway.commandcenter.topics import alert_state_topic
from gateway.identity.pki import PkiLayout, init_pki, issue_device_files, load_certificate, load_private_key
from gateway.identity.trust import load_device_trust
from gateway.store.db import open_database
from gateway.store.registry import DeviceRegistry

#: The machine's PostgreSQL (trust auth); the bench creates and drops its own database on it.
PG_ADMIN_DSN = os.environ.get("PANIC_BENCH_PG", "postgres://postgres@127.0.0.1:5432/test")
MQTT_HOST = os.environ.get("PANIC_BENCH_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("PANIC_BENCH_MQTT_PORT", "1883"))


@dataclass(frozen=True, slots=True)
class BenchDevice:
    """An enrolled device: its id and its private key as PEM (so signing workers in other processes can load it)."""

    device_id: str
    key_pem: bytes


@dataclass(slots=True)
class Testbed:
    """Set up with `async with Testbed(devices=500, log=print) as tb:`; everything is undone on exit."""

    devices_wanted: int
    log: Callable[[str], None] = print
    #: Where to keep the gateway's own log (its warnings and errors) after the work directory is removed.
    keep_log: Path | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="panic-bench-")))
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    devices: list[BenchDevice] = field(default_factory=list)
    #: Every alert id the bench may have caused: their retained states are deleted on exit, seen or not.
    alert_ids: set[str] = field(default_factory=set)
    database_url: str = ""
    http_url: str = ""
    gateway_pid: int = 0
    gateway_log: Path | None = None
    _database: str = ""
    _proc: asyncio.subprocess.Process | None = None

    @property
    def layout(self) -> PkiLayout:
        return PkiLayout(self.workdir / "pki")

    @property
    def prefix(self) -> str:
        """A topic prefix nobody else uses, so the bench never sees (or leaves) anyone else's alerts."""
        return f"bench/{self.run_id}"

    @property
    def gateway_id(self) -> str:
        return f"bench-{self.run_id}"

    def client_ssl(self) -> ssl.SSLContext:
        """What a wearable trusts: the PKI's root."""
        return ssl.create_default_context(cafile=str(self.layout.root_ca_cert))

    async def __aenter__(self) -> Self:
        try:
            init_pki(self.layout)
            await self._create_database()
            await self._enrol()
            await self._start_gateway()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop_gateway()
        if self.keep_log is not None:
            self._save_log(self.keep_log)
        try:
            known = [alert_state_topic(self.prefix, a) for a in self.alert_ids]
            cleared = await clear_prefix(MQTT_HOST, MQTT_PORT, self.prefix, known)
            await end_session(MQTT_HOST, MQTT_PORT, CLIENT_ID_PREFIX + self.gateway_id)
            self.log(f"broker: emptied {cleared} retained topic(s) under {self.prefix}/, ended the gateway's session")
        except Exception as exc:  # clean-up goes on: the database and the keys must still go
            self.log(f"broker clean-up failed ({exc!r}): retained messages may remain under {self.prefix}/")
        await self._drop_database()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- database ---------------------------------------------------------------------------------------

    async def _create_database(self) -> None:
        self._database = f"panic_bench_{self.run_id}"
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute(f'CREATE DATABASE "{self._database}"')
        finally:
            await admin.close()
        self.database_url = f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/{self._database}"

    async def _drop_database(self) -> None:
        if not self._database:
            return
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self._database}" WITH (FORCE)')
        finally:
            await admin.close()
        self.log(f"database {self._database} dropped")
        self._database = ""

    async def _enrol(self) -> None:
        """Every device goes through the CSR path (key, CSR, device-CA signature) and the registry's chain check."""
        started = time.perf_counter()
        layout = self.layout
        async with open_database(self.database_url):
            registry = DeviceRegistry(load_device_trust(layout))
            now = datetime.now(UTC)
            for n in range(self.devices_wanted):
                device_id = f"bench-{n:05d}"
                cert_path, key_path = issue_device_files(layout, device_id, now)
                await registry.add(
                    load_certificate(cert_path), wearer=f"Bench Wearer {n:05d}", site="bench", phone="", now=now
                )
                key_pem = load_private_key(key_path).private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
                self.devices.append(BenchDevice(device_id, key_pem))
        self.log(f"enrolled {len(self.devices)} devices in {time.perf_counter() - started:.1f} s")

    # -- the gateway process ------------------------------------------------------------------------------

    def _config(self, port: int) -> Path:
        layout = self.layout
        text = f"""\
gateway_id = "{self.gateway_id}"

[http]
host = "127.0.0.1"
port = {port}
tls_cert = "{layout.server_cert}"
tls_key = "{layout.server_key}"
address_rate_per_s = {const.BENCH_ADDRESS_RATE}
address_burst = {int(const.BENCH_ADDRESS_RATE)}

[database]
url = "{self.database_url}"

[mqtt]
host = "{MQTT_HOST}"
port = {MQTT_PORT}
topic_prefix = "{self.prefix}"

[pki]
directory = "{layout.directory}"

[log]
level = "WARNING"
format = "json"
"""
        path = self.workdir / "gateway.toml"
        path.write_text(text)
        return path

    async def _start_gateway(self) -> None:
        port = _free_port()
        config = self._config(port)
        binary = Path(sys.executable).with_name("panic-gateway")
        command = [str(binary)] if binary.exists() else [sys.executable, "-m", "gateway.cli"]
        self.gateway_log = self.workdir / "gateway.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PANIC_")}  # the TOML file is the truth
        with self.gateway_log.open("wb") as out:
            self._proc = await asyncio.create_subprocess_exec(
                *command, "run", "--config", str(config), stdout=out, stderr=subprocess.STDOUT, env=env
            )
        self.gateway_pid = self._proc.pid
        self.http_url = f"https://127.0.0.1:{port}"
        started = time.perf_counter()
        deadline = started + const.GATEWAY_START_TIMEOUT_S
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.client_ssl())) as http:
            while True:
                if self._proc.returncode is not None:
                    raise RuntimeError(f"the gateway exited with {self._proc.returncode}:\n{self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(f"{self.http_url}/readyz") as r:
                        if r.status == 200:
                            break
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"the gateway was not ready within {const.GATEWAY_START_TIMEOUT_S} s")
                await asyncio.sleep(0.1)
        self.log(f"gateway pid {self.gateway_pid} ready at {self.http_url} in {time.perf_counter() - started:.1f} s")

    async def _stop_gateway(self) -> None:
        """SIGTERM (the gateway drains and says "offline"), SIGKILL if it has not exited in time; by PID only."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(const.GATEWAY_STOP_TIMEOUT_S):
                await proc.wait()
        except TimeoutError:
            self.log(f"gateway pid {proc.pid} did not stop in {const.GATEWAY_STOP_TIMEOUT_S} s: SIGKILL")
            proc.kill()
            await proc.wait()
        self.log(f"gateway pid {proc.pid} stopped (exit {proc.returncode})")

    def gateway_alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def log_tail(self, lines: int = 30) -> str:
        if self.gateway_log is None or not self.gateway_log.exists():
            return ""
        return "\n".join(self.gateway_log.read_text(errors="replace").splitlines()[-lines:])

    def _save_log(self, path: Path) -> None:
        if self.gateway_log is not None and self.gateway_log.exists() and self.gateway_log.stat().st_size > 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.gateway_log, path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

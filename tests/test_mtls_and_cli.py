"""mTLS with device certificates, and the panic-gateway administration commands."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest

from gateway.cli import main
from gateway.config import HttpSettings
from gateway.identity.pki import PkiLayout
from tests.conftest import GatewayFactory, enroll, http_client, post_frame


def device_ssl(pki: PkiLayout, device_id: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.root_ca_cert))
    ctx.load_cert_chain(pki.device_cert(device_id), pki.device_key(device_id))
    return ctx


async def test_mtls_device_certificate_must_match_the_frame(gateway_factory: GatewayFactory, pki: PkiLayout) -> None:
    http = HttpSettings(port=0, tls_cert=pki.server_cert, tls_key=pki.server_key, require_client_cert=True)
    async with gateway_factory(http=http) as gw:
        alice, bob = await enroll(pki), await enroll(pki)
        async with http_client(device_ssl(pki, alice.device_id)) as session:
            status, body, _ = await post_frame(session, gw, alice.frame())
            assert status == 202, body
            status, problem, _ = await post_frame(session, gw, bob.frame())
            assert (status, problem["reason"]) == (403, "device-mismatch")
        anonymous = ssl.create_default_context(cafile=str(pki.root_ca_cert))
        async with http_client(anonymous) as session:
            with pytest.raises(aiohttp.ClientError):
                await post_frame(session, gw, alice.frame())


def test_config_check_reports_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = Path(__file__).parents[1] / "deploy" / "gateway.example.toml"
    assert main(["config", "check", str(good)]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[http]\nport = "eighty"\nunknown = 1\n[mqtt]\ncert_file = "a.crt"\n')
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "3 problem(s)" in err
    assert "http.port" in err and "http.unknown" in err and "cert_file and key_file" in err
    assert main(["config", "check", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_devices_add_list_show_revoke(
    pki: PkiLayout, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.identity.pki import issue_device_files, load_revoked

    monkeypatch.setenv("PANIC_DATABASE__URL", f"sqlite://{tmp_path / 'cli.sqlite3'}")
    monkeypatch.setenv("PANIC_PKI__DIRECTORY", str(pki.directory))
    cert, _ = issue_device_files(pki, "cli-dev-1")
    spaced = ["devices", "add", "--cert", str(cert), "--wearer", "Ada", "--phone", "+49 30 123456789"]
    assert main(spaced) == 2  # SMS frames are matched on the exact E.164 sender
    assert "is not an E.164 number" in capsys.readouterr().err
    assert (
        main(
            [
                "devices",
                "add",
                "--cert",
                str(cert),
                "--wearer",
                "Ada Lovelace",
                "--site",
                "north",
                "--phone",
                "+4930123456789",
            ]
        )
        == 0
    )
    assert "registered cli-dev-1" in capsys.readouterr().out
    assert main(["devices", "add", "--cert", str(cert), "--wearer", "Again"]) == 2
    assert "already registered" in capsys.readouterr().err
    assert main(["devices", "list"]) == 0
    out = capsys.readouterr().out
    assert "cli-dev-1" in out and "Ada Lovelace" in out and "active" in out
    assert main(["devices", "show", "cli-dev-1"]) == 0
    out = capsys.readouterr().out
    assert "*789" in out and "+4930123456789" not in out, "a full phone number must never be printed"
    revoked_before = len(load_revoked(pki))
    assert main(["devices", "revoke", "cli-dev-1", "--reason", "lost on site"]) == 0
    assert "CRL updated" in capsys.readouterr().out
    assert len(load_revoked(pki)) == revoked_before + 1
    assert main(["devices", "show", "cli-dev-1"]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["devices", "show", "nobody"]) == 2
    assert "not registered" in capsys.readouterr().err

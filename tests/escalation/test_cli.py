"""`panic-gateway escalation ...`: the directory is validated as a whole, stored as versions, and edited safely."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from tests.escalation.conftest import directory_toml, step

EXAMPLE = Path(__file__).parents[2] / "deploy" / "escalation.example.toml"


@pytest.fixture
def cli_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANIC_DATABASE__URL", f"sqlite://{tmp_path / 'cli.sqlite3'}")


def test_check_accepts_the_example_and_lists_every_problem_of_a_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["escalation", "check", str(EXAMPLE)]) == 0
    assert "ok" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[responders]]\nid = "ana"\nname = "Ana"\nphone = "+1 555"\n\n'
        '[[policies]]\nid = "p"\nsite = "north"\n[[policies.steps]]\nchannel = "sms"\nwait_s = 30\n'
        'targets = ["responder:anna"]\n'
    )
    assert main(["escalation", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "responders[0].phone: '+1 555' is not an E.164 number" in err
    assert "unknown responder 'anna'" in err


def test_load_show_edit_and_export_the_directory(
    tmp_path: Path, cli_db: None, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "escalation.toml"
    file.write_text(directory_toml(step("sms", 30, "responder:ana")).replace("{device}", "wb-0001"))
    assert main(["escalation", "load", str(file)]) == 0
    assert "loaded as version 1" in capsys.readouterr().out
    assert main(["escalation", "load", str(file)]) == 0
    assert "unchanged" in capsys.readouterr().out

    assert main(["escalation", "responders", "add", "dee", "--name", "Dee Guard", "--phone", "+15551230004"]) == 0
    assert "stored as version 2" in capsys.readouterr().out
    assert main(["escalation", "responders", "add", "eve", "--name", "Eve", "--phone", "12345"]) == 2
    assert "not an E.164 number" in capsys.readouterr().err
    assert main(["escalation", "responders", "remove", "ana"]) == 2  # the policy still names her
    assert "north-default" in capsys.readouterr().err
    assert main(["escalation", "responders", "list"]) == 0
    listing = capsys.readouterr().out
    assert "Dee Guard" in listing and "+1555***0004" in listing and "+15551230004" not in listing

    assert (
        main(
            [
                "escalation",
                "wearer",
                "wb-0002",
                "--notes",
                "Deaf: text, do not call",
                "--contact",
                "Kim=+15557650000:sister",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["escalation", "show"]) == 0
    assert "version 3" in capsys.readouterr().out
    exported = tmp_path / "exported.toml"
    assert main(["escalation", "export", "-o", str(exported)]) == 0
    text = exported.read_text()
    assert "Deaf: text, do not call" in text and 'id = "dee"' in text
    assert main(["escalation", "check", str(exported)]) == 0


def test_a_bad_time_zone_is_refused_when_settings_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[escalation]\ntime_zone = "Europe/Atlantis"\n')
    assert main(["config", "check", str(config)]) == 2
    assert "'Europe/Atlantis' is not an IANA time zone" in capsys.readouterr().err

"""`panic-gateway cells import`: an OpenCellID file streams into the database; bad lines are counted, not fatal."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.location.cells import CellKey, CellRow, write_cell_csv
from gateway.location.model import CellSite
from gateway.store.db import open_database
from gateway.store.locations import CellDatabase, import_cells


def rows(n: int, *, lat: float = 52.5) -> list[CellRow]:
    return [
        CellRow(CellKey("lte", 262, 1, 100 + i % 7, 5000 + i), CellSite(lat, 13.4 + i * 1e-4, 800.0, 12))
        for i in range(n)
    ]


async def test_import_upserts_in_batches_and_prefetch_finds_exactly_the_known_keys(db_url: str) -> None:
    async with open_database(db_url):
        report = await import_cells(rows(120), batch=50)
        assert (report.stored, report.problems) == (120, 0)
        await import_cells(rows(10, lat=48.1), batch=50)  # newer data for known cells replaces the old
        table = await CellDatabase().prefetch([rows(1)[0].key, CellKey("lte", 262, 1, 999, 5000), rows(11)[10].key])
        assert len(table) == 2
        site = table.get(rows(1)[0].key)
        assert site is not None and site.lat == 48.1
        assert await CellDatabase.count() == 120


def test_the_cli_imports_a_generated_file_and_reports_bad_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PANIC_DATABASE__URL", f"sqlite://{tmp_path / 'cells.sqlite3'}")
    csv = tmp_path / "cell_towers.csv"
    with csv.open("w", encoding="utf-8", newline="") as out:
        write_cell_csv(rows(30), out)
    with csv.open("a", encoding="utf-8") as out:
        out.write("LTE,262,1,100,77,0,13.4,95.0,800,1,1,0,0,0\n")  # latitude 95: impossible
        out.write("garbage\n")
    assert main(["cells", "import", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "30 cell(s) stored" in out and "2 line(s) skipped" in out
    assert "line 32:" in out and "line 33:" in out
    assert main(["cells", "count"]) == 0
    assert "30 cell(s)" in capsys.readouterr().out
    bad = tmp_path / "other.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    assert main(["cells", "import", str(bad)]) == 2
    assert "error:" in capsys.readouterr().err


def test_sites_check_load_and_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PANIC_DATABASE__URL", f"sqlite://{tmp_path / 'sites.sqlite3'}")
    example = Path(__file__).parents[2] / "deploy" / "sites.example.geojson"
    assert main(["sites", "show"]) == 0
    assert "no site map loaded" in capsys.readouterr().out
    assert main(["sites", "check", str(example)]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["sites", "load", str(example)]) == 0
    assert "loaded as version 1" in capsys.readouterr().out
    assert main(["sites", "show"]) == 0
    out = capsys.readouterr().out
    assert "version 1" in out and "building(s)" in out
    bad = tmp_path / "bad.geojson"
    bad.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"kind": "moon"}}]}')
    assert main(["sites", "check", str(bad)]) == 2
    assert "error:" in capsys.readouterr().err


def test_receivers_are_shown_in_the_site_map_with_their_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PANIC_DATABASE__URL", f"sqlite://{tmp_path / 'rx.sqlite3'}")
    example = Path(__file__).parents[2] / "deploy" / "sites.example.geojson"
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[[ble.receivers]]\nname = "lab"\ntransport = "tcp-client:127.0.0.1:9"\nsite = "north"\nbuilding = "b"\n'
        'floor = 2\nroom = "214"\nx = 35.0\ny = 4.0\n\n'
        '[[ble.receivers]]\nname = "lost"\ntransport = "tcp-client:127.0.0.1:9"\nsite = "north"\nbuilding = "z"\n'
    )
    assert main(["sites", "load", str(example)]) == 0
    capsys.readouterr()
    assert main(["receivers", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "lab              North Plant, Building B, floor 2, room 214 (Lab) at 52." in out
    assert "problem: receiver lost: building 'z' is not in the site map" in out

"""No machine paths in the book (issue 15 item 8): paths are shown relative to the project or as $KALM_DATA_DIR/…"""
from __future__ import annotations

import logging
from pathlib import Path

from kalm_lib.book_check import machine_paths
from kalm_lib.paths import DisplayPathFilter, display_path

ROOT = Path(__file__).resolve().parents[1]


def test_display_path(monkeypatch, tmp_path):
    data = tmp_path / "mirror"
    data.mkdir()
    monkeypatch.setenv("KALM_DATA_DIR", str(data))
    monkeypatch.delenv("KALM_HUB_DIR", raising=False)
    proj = tmp_path / "proj"
    text = f"wrote {proj}/build/smoke/run/mined/x.jsonl from {data}/en/sts/test.jsonl; {proj}"
    assert display_path(text, proj) == "wrote build/smoke/run/mined/x.jsonl from $KALM_DATA_DIR/en/sts/test.jsonl; ."
    assert display_path("runs/smoke/pretrain", proj) == "runs/smoke/pretrain"      # relative stays as it is
    assert display_path(f"{proj}other/x", proj) == f"{proj}other/x"                # a sibling is not the project


def test_the_log_filter_rewrites_messages(tmp_path, caplog):
    log = logging.getLogger("kalm_lib.test_display")
    flt = DisplayPathFilter(tmp_path)
    handler = caplog.handler
    handler.addFilter(flt)
    try:
        with caplog.at_level(logging.INFO, logger="kalm_lib.test_display"):
            log.info("saved %s", tmp_path / "run" / "final")
    finally:
        handler.removeFilter(flt)
    assert caplog.records[-1].getMessage() == "saved run/final"


def test_machine_paths_in_a_page(monkeypatch):
    monkeypatch.chdir(ROOT)
    page = (f"<p>model at {ROOT}/build/smoke/run/pretrain/final</p><script>var x='{ROOT}';</script>"
            "<p>build/smoke/run/pretrain/final</p>")
    assert machine_paths(page) == [f"{ROOT}/build/smoke/run/pretrain/final"]   # the script's is not shown
    assert machine_paths("<p>build/smoke/run and $KALM_DATA_DIR/en</p>") == []


def test_notebook_parameters_are_relative(monkeypatch):
    from kalm_lib.reproduce import notebook_parameters

    monkeypatch.setenv("KALM_PROJECT_ROOT", str(ROOT))
    params = notebook_parameters("02_pretrain", "smoke", ROOT / "build" / "smoke" / "run")
    assert params["run_dir"] == "build/smoke/run"

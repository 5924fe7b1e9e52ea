"""The CLI acts as the named local administrator; ``runs report`` writes HTML and cuts nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlmodel import select

from tests.api.conftest import write_plans
from workflows.cli import main
from workflows.demo import PASSWORD_VARIABLE, lab_topology
from workflows.store import Database, Step
from workflows.tokens import local_administrator

pytestmark = pytest.mark.integration

LONG_ERROR = (
    "Start-VMFailover failed on hv-got-1: the virtual machine sql-01 is not in a state that "
    "allows a test failover (replication state Resynchronizing, health Critical); wait for "
    "resynchronisation to finish, then run the test again: ferryman runs resume RUN"
)


def _cells(output: str, column: int) -> str:
    """The text of one column of a Rich table, its folded lines joined."""
    parts = []
    for line in output.splitlines():
        cells = line.split("│")
        if len(cells) > column + 1:
            parts.append(cells[column + 1].strip())
    return "".join(parts)


def test_cli_decisions_record_the_local_administrator_and_reports_keep_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lab.testing import running_lab
    from workers.hyperv.psrp import shared_cache

    url = f"sqlite:///{tmp_path}/ferryman.db"
    monkeypatch.setenv("FERRYMAN_DATABASE_URL", url)
    monkeypatch.setenv("COLUMNS", "80")
    runner = CliRunner()
    with running_lab(lab_topology(), auth="ntlm") as lab:
        monkeypatch.setenv(PASSWORD_VARIABLE, lab.password)
        urls = {name: endpoint.url for name, endpoint in lab.endpoints.items()}
        plan = write_plans(tmp_path / "plans", urls)
        files = [str(plan.parent / "fabric.yaml"), str(plan)]
        try:
            started = runner.invoke(
                main, ["run", *files, "--plan", "three-tier", "--type", "test", "--by", "ticket-42"]
            )
            assert started.exit_code == 0, started.output
            run_id = re.search(r"run ([0-9a-f]{12})", started.output)
            assert run_id is not None, started.output
            approved = runner.invoke(main, ["runs", "approve", run_id[1], "--comment", "ok"])
            assert approved.exit_code == 0, approved.output
        finally:
            shared_cache().close()

    actor = local_administrator().actor
    assert actor.endswith("(administrator via local CLI)")
    html_file = tmp_path / "report.html"
    reported = runner.invoke(main, ["runs", "report", run_id[1], "--html", str(html_file)])
    assert reported.exit_code == 0, reported.output
    page = html_file.read_text(encoding="utf-8")
    assert f"{actor} for ticket-42" in page  # requested by
    assert f"<td>{actor}</td>" in page  # decided the gate
    assert "achieved: start to last VM up" in page and "<style>" in page
    assert "https://" not in page and "http://" not in page  # nothing to fetch when printed

    # a long error and a long run id wrap in the text report at 80 columns; nothing is cut
    db = Database(url)
    with db.session() as session:
        step = session.exec(select(Step).where(Step.run_id == run_id[1])).first()
        assert step is not None
        step.error = LONG_ERROR
        session.add(step)
    db.dispose()
    text = runner.invoke(main, ["runs", "report", run_id[1]])
    assert text.exit_code == 0, text.output
    assert LONG_ERROR.replace(" ", "") in _cells(text.output, 4).replace(" ", "")
    assert f"run {run_id[1]}" in text.output

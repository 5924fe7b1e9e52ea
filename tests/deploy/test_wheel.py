"""The wheel built from the checkout, installed (not editable) into a fresh venv, runs the demo
from an empty folder: everything the demo, the lab and the migrations need is in the wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / "deploy" / "constraints.txt"


def _run(*command: str | Path, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FERRYMAN_", "PYTHON"))}
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, (
        f"{command} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    )
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # from a copy-free build of the checkout, the way `pip install .` builds it
    _run(sys.executable, "-m", "build", "--wheel", "--outdir", out, ROOT, cwd=out, timeout=600)
    (built,) = out.glob("ferryman-*.whl")
    return built


def test_wheel_holds_the_demo_lab_and_migrations(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "lab/examples/topology.yaml",
        "plans/examples/three-tier.yaml",
        "plans/examples/fabric.yaml",
        "workflows/migrations/script.py.mako",
        "workflows/migrations/env.py",
    ):
        assert needed in names
    assert any(name.startswith("workflows/migrations/versions/0001_") for name in names)
    assert any(
        name.endswith(".dist-info/licenses/LICENSE") or name.endswith("/LICENSE") for name in names
    )
    top_level = {name.split("/", 1)[0] for name in names if "/" in name}
    assert {name for name in top_level if not name.endswith(".dist-info")} == {
        "plans",
        "workflows",
        "workers",
        "lab",
    }


@pytest.mark.slow
def test_installed_wheel_runs_the_demo_from_an_empty_folder(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    _run(
        python,
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        "-c",
        CONSTRAINTS,
        wheel,
        cwd=tmp_path,
        timeout=900,
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    demo = _run(env_dir / "bin" / "ferryman", "demo", "--no-live", cwd=empty, timeout=600)
    assert "succeeded" in demo.stdout
    assert "test VMs left in the" in demo.stdout
    # the demo keeps its database in a temporary folder, never in the caller's
    assert list(empty.iterdir()) == []

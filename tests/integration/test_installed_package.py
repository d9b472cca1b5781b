"""firedrill as a team installs it: the wheel built from this checkout, in a fresh virtual
environment, driven from an empty directory outside the checkout. Templates, features, the IAM
policy and the pytest plugin must all come from the installed package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.fixtures.features import OWN_FAILOVER_FEATURE

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding only the firedrill wheel; its dependencies are this venv's (a .pth line, which
    adds the directory but not its .pth files, so the checkout's editable install stays out)."""
    base = tmp_path_factory.mktemp("installed")
    wheels = base / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("firedrill-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "firedrill-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return venv


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}


def test_the_installed_package_is_the_wheel_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(installed / "bin" / "python"), "-c", "import firedrill, firedrill.report.templating as t; "
         "print(firedrill.__file__); print(t.TEMPLATES_DIR)"],
        capture_output=True, text=True, cwd=tmp_path, env=_env(), check=True,
    )  # fmt: skip
    module, templates = proc.stdout.split()
    assert module.startswith(str(installed)) and not module.startswith(str(ROOT))
    assert (Path(templates) / "report.html.j2").is_file()
    policy = subprocess.run(
        [str(installed / "bin" / "firedrill"), "aws", "iam-policy"],
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert json.loads(policy.stdout)["Version"] == "2012-10-17"


def test_init_then_run_then_pytest_from_an_empty_directory(installed: Path, tmp_path: Path) -> None:
    firedrill = str(installed / "bin" / "firedrill")
    init = subprocess.run(
        [firedrill, "init", "drills"], cwd=tmp_path, env=_env(), capture_output=True, text=True
    )
    assert init.returncode == 0, init.stderr
    drills = tmp_path / "drills"
    (drills / "my.feature").write_text(OWN_FAILOVER_FEATURE)
    run = subprocess.run(
        [firedrill, "run", "my.feature", "--quiet"],
        cwd=drills,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "1/1 scenarios passed" in run.stdout
    (report,) = drills.glob("reports/out/*/report.html")
    assert "Our primary crashes at 200 writes a second" in report.read_text()
    pytest_run = subprocess.run(
        [str(installed / "bin" / "python"), "-m", "pytest", "my.feature", "-q", "-p", "no:cacheprovider"],
        cwd=drills,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pytest_run.returncode == 0, pytest_run.stdout[-3000:]
    assert "1 passed" in pytest_run.stdout
    assert len(list(drills.glob("reports/out/*/evidence.json"))) == 2


def test_the_installed_tool_runs_the_reference_application(installed: Path, tmp_path: Path) -> None:
    """The reference application is package data: a drill behind it runs from the installed wheel."""
    app = next(installed.glob("lib/python*/site-packages/firedrill/reference_app/app.py"))
    assert app.is_file()
    run = subprocess.run(
        [str(installed / "bin" / "firedrill"), "run", "failover", "-k", "reference and app", "--quiet"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "1/1 scenarios passed" in run.stdout
    [record] = [json.loads(p.read_text()) for p in tmp_path.glob("reports/out/*/evidence.json")]
    assert record["service"]["rto_s"] is not None and record["service"]["lost_writes"] == 0

"""scripts/setup-env.sh skips pip when nothing it installs from changed, and installs again when it did.

Runs the real script (real apt checks, real `edged install-models`) in a copy of the checkout. Its .venv
is a real virtualenv prepared by the test without pip (nothing may be downloaded here): the packages
come from this test run's environment through PYTHONPATH, and `.venv/bin/edged` is the console script
pip would write. So the install branch runs pip and fails quietly (as it does offline), and what is
checked is the decision: install, stamp, skip, and install again after pyproject.toml changes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.support.edged import repo_copy


def run_setup(repo: Path, env: dict[str, str]) -> str:
    r = subprocess.run(
        ["bash", "scripts/setup-env.sh"], cwd=repo, env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout + r.stderr


def test_setup_env_installs_once_then_skips_until_pyproject_changes(tmp_path: Path) -> None:
    repo = repo_copy(tmp_path)
    venv = repo / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    script = venv / "bin" / "edged"
    script.write_text(f"#!{venv}/bin/python\nfrom edged.cli.main import main\nraise SystemExit(main())\n")
    script.chmod(0o755)
    env = {
        **os.environ,
        "PYTHONPATH": f"{repo}:{sysconfig.get_paths()['purelib']}",
        "PATH": f"{venv}/bin:{os.environ['PATH']}",
    }
    stamp = venv / ".edged-setup-stamp"

    first = run_setup(repo, env)
    assert "setup: installing edged" in first and "setup: ready" in first
    assert stamp.is_file()

    second = run_setup(repo, env)
    assert "setup: .venv up to date" in second and "installing" not in second

    with (repo / "pyproject.toml").open("a") as f:
        f.write("\n# a dependency changed\n")
    third = run_setup(repo, env)
    assert "setup: installing edged" in third

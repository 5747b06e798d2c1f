"""Go's own transparency-log code (golang.org/x/mod/sumdb/note and sumdb/tlog) as an
independent verifier: the Go program tests/support/go_tlog/main.go, built once per session,
offline (GOPATH mode, GOPROXY=off), and skipped, saying why, where Go or the package is
missing (.ci/run installs both)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

GO_SOURCE = Path(__file__).resolve().parents[1] / "support" / "go_tlog" / "main.go"
GOPATH = Path("/usr/share/gocode")


@pytest.fixture(scope="session")
def go_tlog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.skip("no `go` on PATH (apt-get install golang-go golang-golang-x-mod-dev; .ci/run does)")
    if not (GOPATH / "src/golang.org/x/mod/sumdb/tlog/tlog.go").exists():
        pytest.skip(f"golang.org/x/mod is not under {GOPATH} (apt-get install golang-golang-x-mod-dev)")
    work = tmp_path_factory.mktemp("go_tlog")
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": str(GOPATH),
        "GOCACHE": str(work / "cache"),
        "GOPROXY": "off",
        "GOFLAGS": "",
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
    }
    shutil.copy(GO_SOURCE, work / "main.go")
    built = subprocess.run(
        [go, "build", "-o", str(work / "go_tlog"), "main.go"], cwd=work, env=env, capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr
    return work / "go_tlog"

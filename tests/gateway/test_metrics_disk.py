"""The gateway's multi-process metrics on a full disk: a few events go uncounted, no worker dies.

prometheus_client maps sparse files and writes into them; on a full disk the first write to a
page with no block behind it is a SIGBUS. The disk-full regression test saw it as gateway
workers closing connections without an answer. ``prepare_multiprocess`` makes the library
reserve its blocks first (``posix_fallocate``), so the failure is an OSError that
``Metrics._child`` absorbs. Each case runs in a child process: ``prepare_multiprocess`` changes
the process's environment and the library's storage for good.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.servers import ROOT

# In a child: metrics counted into DIRECTORY, then (once stdin says so) a histogram, whose
# values go to a new file, and 3,000 new label sets, about 200 KiB of new entries, more than
# the library's first 64 KiB file holds; then what it left on disk, and a scrape of it.
_CHILD = """
import os, sys
from pathlib import Path
from gateway.server.metrics import Metrics, prepare_multiprocess
directory = prepare_multiprocess(Path(sys.argv[1]), 8402)
metrics = Metrics.build()
metrics.request("/v1/flat", "POST", 200)
from prometheus_client import values
print(type(values.MmapedDict).__name__, values.MmapedDict.__name__, flush=True)
sys.stdin.readline()
metrics.upstream("/v1/flat", "model", 0.01)  # the first histogram: a new file
for i in range(3000):
    metrics.request("/v1/flat", "POST", 200)
    metrics.payment(f"/v1/route-{i}", "settled")
files = sorted(directory.iterdir())
print("empty files:", sum(1 for f in files if f.stat().st_size == 0), flush=True)
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
scraped = CollectorRegistry()
MultiProcessCollector(scraped)
line = next(l for l in generate_latest(scraped).decode().splitlines() if l.startswith("inferpay_requests_total{"))
print("requests counted:", line.rsplit(" ", 1)[1], flush=True)
print("sparse" if any(f.stat().st_blocks * 512 < f.stat().st_size for f in files) else "reserved", flush=True)
"""


def _run_child(directory: Path, before_go: Callable[[], object] | None = None) -> tuple[int, list[str]]:
    with subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(directory)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as child:
        assert child.stdin is not None and child.stdout is not None
        first = child.stdout.readline().strip()
        if before_go is not None:
            before_go()
        rest, _ = child.communicate("go\n", timeout=60)
        return child.returncode, [first, *rest.splitlines()]


def test_the_library_makes_its_files_through_the_reserving_class(tmp_path: Path) -> None:
    code, lines = _run_child(tmp_path)
    assert code == 0, lines
    assert lines[0] == "type ReservedMmapedDict", lines  # prometheus_client.values looks it up
    assert lines[-1] == "reserved", lines  # every block of every file is allocated


def test_new_label_sets_on_a_full_disk_go_uncounted_and_the_process_lives(tmp_path: Path) -> None:
    from reliability.diskfull import Tmpfs, unavailable

    if (why := unavailable()) is not None:
        pytest.skip(f"cannot mount a tmpfs here: {why}")
    with Tmpfs("4m") as disk:
        try:
            code, lines = _run_child(disk.path, disk.fill)
        finally:
            disk.release()
    assert code == 0, f"exit {code} (-7 is SIGBUS): {lines}"
    # A file that could not get its first blocks is gone (the scraper cannot read an empty one),
    # the scrape still works, and the label set counted before the disk filled kept counting.
    assert "empty files: 0" in lines, lines
    assert "requests counted: 3001.0" in lines, lines

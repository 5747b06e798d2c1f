"""The nemesis: faults injected while the load runs (TigerBeetle's simulator, Jepsen's nemesis).

- ``kill_gateway``: SIGKILL to the gateway's whole process group (gunicorn's master and both
  workers) at a random moment, down for a random while, then started again on the same port;
- ``kill_upstream``: the same to the echo or the chat upstream (calls in flight break mid-body);
- ``clock_step``: the machine's wall clock stepped back or forward (``reliability.clock``), for
  the gateway and the clients at once; half of the steps are followed by a gateway crash and
  restart (so the gateway also starts on the moved clock), half happen under the running gateway.

Faults are spread over the run with random jitter from a seeded generator, so a run can be
repeated; each one is logged with the time it happened.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from reliability.deploy import Deployment


@dataclass
class Plan:
    gateway_kills: int = 0
    upstream_kills: int = 0
    clock_offsets: list[float] = field(default_factory=list)  # each a step to this offset


class Nemesis(threading.Thread):
    def __init__(self, dep: Deployment, plan: Plan, duration: float, seed: int) -> None:
        super().__init__(name="nemesis", daemon=True)
        self.dep = dep
        self.duration = duration
        self.rng = random.Random(seed)
        self.stop_event = threading.Event()
        self.events: list[dict[str, Any]] = []
        self.errors: list[str] = []
        faults: list[tuple[str, Any]] = [("kill_gateway", None)] * plan.gateway_kills
        faults += [("kill_upstream", None)] * plan.upstream_kills
        faults += [("clock_step", offset) for offset in plan.clock_offsets]
        if plan.clock_offsets:  # clock steps keep their order; crashes fall between them
            steps = [f for f in faults if f[0] == "clock_step"]
            others = [f for f in faults if f[0] != "clock_step"]
            self.rng.shuffle(others)
            merged: list[tuple[str, Any]] = []
            for i, step in enumerate(steps):
                merged.append(step)
                merged.extend(others[i :: len(steps)])
            faults = merged
        else:
            self.rng.shuffle(faults)
        self.faults = faults

    def run(self) -> None:
        started = time.monotonic()
        count = len(self.faults)
        for index, (kind, arg) in enumerate(self.faults):
            # Evenly spread over the middle 85% of the run, each slot jittered.
            slot = self.duration * (0.05 + 0.85 * (index + self.rng.uniform(0.1, 0.9)) / max(count, 1))
            if self.stop_event.wait(max(0.0, started + slot - time.monotonic())):
                return
            try:
                self._inject(kind, arg, time.monotonic() - started)
            except Exception as exc:  # a restart that fails is itself a finding
                self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")

    def stop(self) -> None:
        self.stop_event.set()
        self.join(120)

    def _inject(self, kind: str, arg: Any, at: float) -> None:
        event: dict[str, Any] = {"fault": kind, "atSeconds": round(at, 2)}
        down = self.rng.uniform(0.0, 1.0)
        if kind == "kill_gateway":
            self._restart("gateway", down, event)
        elif kind == "kill_upstream":
            name = self.rng.choice(["echo", "chat"])
            event["server"] = name
            self._restart(name, down, event)
        elif kind == "clock_step":
            event["offsetFrom"], event["offsetTo"] = self.dep.clock.offset, arg
            self.dep.clock.set(arg)
            if self.rng.random() < 0.5:
                event["thenCrashed"] = True
                self._restart("gateway", down, event)
        self.events.append(event)

    def _restart(self, name: str, down: float, event: dict[str, Any]) -> None:
        started = time.monotonic()
        self.dep.restart(name, down)
        event["downSeconds"] = round(time.monotonic() - started, 2)

    def figures(self) -> dict[str, Any]:
        by_kind: dict[str, int] = {}
        for event in self.events:
            key = event["fault"] if event["fault"] != "kill_upstream" else f"kill_upstream_{event['server']}"
            by_kind[key] = by_kind.get(key, 0) + 1
            if event.get("thenCrashed"):
                by_kind["kill_gateway_after_clock_step"] = by_kind.get("kill_gateway_after_clock_step", 0) + 1
        return {"injected": len(self.events), "byKind": by_kind, "errors": self.errors, "events": self.events}

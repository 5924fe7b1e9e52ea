"""Fault injection: latency, failure rates and "fail the next N calls" rules.

A rule (topology ``faults:`` entry or ``POST /faults`` body) matches calls by ``cmdlet``
(a name or glob, default ``*``), ``vm`` and ``host`` (optional), and does one or both of:

- ``latency_ms``: a fixed delay, or ``[low, high]`` for a uniform random one (real
  milliseconds, not lab time: it is meant for client timeouts), slept before the cmdlet runs;
  a rule's latency is charged once per call, however many cmdlets of the call's pipeline it
  matches (WinRM's round trip is paid once per call);
- ``fail``: ``http500`` or ``reset`` (transient: :class:`~lab.objects.TransportFault`) or
  ``error`` (permanent: a terminating :class:`~lab.objects.CmdletError` with ``error_id`` and
  ``message``), for the next ``count`` matching calls, or each call with probability ``rate``
  (seeded RNG), or every call when neither is given;
- ``after: true`` (with ``http500``/``reset``): the call takes effect first, then its answer
  is lost, as when a connection drops after the host acted; a redelivered task must then
  notice the work is done (the audit log shows the first call with ``fault`` set).

Scripts match ``cmdlet: Script``.

World faults use the same endpoint and are applied to the world rather than kept as rules:
``{"host_down": "hv-sto-1"}``, ``{"vm": "sql-01", "health": "Critical"}``,
``{"vm": "web-02", "no_ip": true}``.
"""

from __future__ import annotations

import fnmatch
import random
import threading
from dataclasses import dataclass
from typing import Any

FAIL_KINDS = ("http500", "reset", "error")
WORLD_KEYS = ("host_down", "health", "no_ip")
_RULE_KEYS = {
    "cmdlet",
    "vm",
    "host",
    "latency_ms",
    "fail",
    "count",
    "rate",
    "error_id",
    "message",
    "after",
}


class FaultSpecError(ValueError):
    """A fault rule that cannot be used; the message says which field to fix."""


@dataclass
class FaultRule:
    """One rule; ``remaining`` counts down for ``count`` rules (None: no count)."""

    id: int
    cmdlet: str = "*"
    vm: str | None = None
    host: str | None = None
    latency_ms: tuple[float, float] | None = None
    fail: str | None = None
    remaining: int | None = None
    rate: float | None = None
    error_id: str | None = None
    message: str | None = None
    after: bool = False
    fired: int = 0

    def matches(self, host: str, cmdlet: str, vm: str | None) -> bool:
        """True when this rule applies to the call."""
        if not fnmatch.fnmatchcase(cmdlet.lower(), self.cmdlet.lower()):
            return False
        if self.host is not None and self.host.lower() != host.lower():
            return False
        return self.vm is None or (vm is not None and self.vm.lower() == vm.lower())

    def as_dict(self) -> dict[str, Any]:
        """JSON form, as ``GET /faults`` lists it."""
        return {
            "id": self.id,
            "cmdlet": self.cmdlet,
            "vm": self.vm,
            "host": self.host,
            "latency_ms": None if self.latency_ms is None else list(self.latency_ms),
            "fail": self.fail,
            "remaining": self.remaining,
            "rate": self.rate,
            "error_id": self.error_id,
            "message": self.message,
            "after": self.after,
            "fired": self.fired,
        }


@dataclass(frozen=True)
class Decision:
    """What the injector wants done to one call: a delay (seconds) and/or a failure."""

    delay: float = 0.0
    failure: FaultRule | None = None


def is_world_fault(spec: dict[str, Any]) -> bool:
    """True for a host-down / health / no-IP fault (applied to the world, not kept)."""
    return any(k in spec for k in WORLD_KEYS)


class FaultInjector:
    """The rules in force; thread-safe; one seeded RNG so runs are reproducible."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()
        self._next_id = 1

    def add(self, spec: dict[str, Any]) -> FaultRule:
        """Validate ``spec`` and add it as a rule; raises :class:`FaultSpecError`."""
        unknown = set(spec) - _RULE_KEYS
        if unknown:
            raise FaultSpecError(
                f"unknown fault field(s) {sorted(unknown)}; use {sorted(_RULE_KEYS)} "
                f"or one of {list(WORLD_KEYS)}"
            )
        latency = _latency(spec.get("latency_ms"))
        fail = spec.get("fail")
        if fail is not None and fail not in FAIL_KINDS:
            raise FaultSpecError(f"fail must be one of {list(FAIL_KINDS)}, not {fail!r}")
        if latency is None and fail is None:
            raise FaultSpecError("a fault rule needs latency_ms, fail, or both")
        count = spec.get("count")
        if count is not None and (
            not isinstance(count, int) or isinstance(count, bool) or count < 1
        ):
            raise FaultSpecError(f"count must be an integer >= 1, not {count!r}")
        rate = spec.get("rate")
        if rate is not None and (
            isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1
        ):
            raise FaultSpecError(f"rate must be a number between 0 and 1, not {rate!r}")
        if fail is None and (count is not None or rate is not None):
            raise FaultSpecError("count and rate apply to fail; add fail: http500|reset|error")
        after = spec.get("after", False)
        if not isinstance(after, bool) or (after and fail not in ("http500", "reset")):
            raise FaultSpecError("after: true goes with fail: http500 or reset only")
        with self._lock:
            rule = FaultRule(
                id=self._next_id,
                cmdlet=str(spec.get("cmdlet") or "*"),
                vm=None if spec.get("vm") is None else str(spec["vm"]),
                host=None if spec.get("host") is None else str(spec["host"]),
                latency_ms=latency,
                fail=fail,
                remaining=count,
                rate=None if rate is None else float(rate),
                error_id=spec.get("error_id"),
                message=spec.get("message"),
                after=after,
            )
            self._next_id += 1
            self._rules.append(rule)
        return rule

    def decide(
        self, host: str, cmdlet: str, vm: str | None, charged: set[int] | None = None
    ) -> Decision:
        """Roll the dice for one cmdlet: total latency of matching rules, first failure.

        ``charged`` holds the ids of the rules whose latency the call this cmdlet belongs to
        has already paid: a rule's latency is charged once per call (the round trip is paid
        once, however many of the pipeline's cmdlets match), and is added to it here.
        """
        delay = 0.0
        failure = None
        with self._lock:
            for rule in self._rules:
                if not rule.matches(host, cmdlet, vm):
                    continue
                if rule.latency_ms is not None and (charged is None or rule.id not in charged):
                    if charged is not None:
                        charged.add(rule.id)
                    low, high = rule.latency_ms
                    delay += (low if low == high else self._rng.uniform(low, high)) / 1000.0
                if failure is None and rule.fail is not None and self._fires(rule):
                    failure = rule
        return Decision(delay, failure)

    def _fires(self, rule: FaultRule) -> bool:
        if rule.remaining is not None and rule.remaining <= 0:
            return False
        if rule.rate is not None and self._rng.random() >= rule.rate:
            return False
        if rule.remaining is not None:
            rule.remaining -= 1
        rule.fired += 1
        return True

    def rules(self) -> list[FaultRule]:
        """The rules in force, oldest first."""
        with self._lock:
            return list(self._rules)

    def clear(self) -> int:
        """Drop every rule; returns how many there were."""
        with self._lock:
            count = len(self._rules)
            self._rules.clear()
        return count


def _latency(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise FaultSpecError("latency_ms must be milliseconds or [low, high]")
    if isinstance(value, int | float):
        if value < 0:
            raise FaultSpecError("latency_ms must be >= 0")
        return (float(value), float(value))
    if isinstance(value, list | tuple) and len(value) == 2:
        low, high = value
        if (
            all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
            and 0 <= low <= high
        ):
            return (float(low), float(high))
    raise FaultSpecError(f"latency_ms must be milliseconds or [low, high], not {value!r}")

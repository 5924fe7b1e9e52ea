"""A bundle: the fabric and recovery plans loaded from a set of files, checked as a whole.

:func:`validate` reads the files and everything they include, and reports every problem at
once; :func:`load_bundle` does the same and raises :class:`~plans.problems.PlanInvalid` when
there is any error. A :class:`Bundle` is what the engine runs: immutable, with a canonical
JSON snapshot and its hash, so a run can keep exactly what it ran.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from plans.collection import collector_paused
from plans.errors import ConfigurationError
from plans.files import (
    MAX_TEXT_BYTES,
    PLAN_ROOTS_VARIABLE,
    FileRefused,
    configured_roots,
    read_bounded,
    resolve_under,
    within,
)
from plans.inputs import INPUT_RULES
from plans.loader import LoadedFile, load_file
from plans.model import Document, Fabric, RecoveryPlan, ScriptAction
from plans.problems import DocPath, PlanInvalid, Problem, Severity, sort_problems
from plans.protection import PROTECTION_RULES
from plans.rules import Finding, RuleContext, check_bundle
from plans.structure import validated_structure

MAX_FILES = 100  # files in one bundle, includes counted
PLAN_SUFFIXES = (".yaml", ".yml")  # what an include may name: plan and fabric files only


class UnknownPlan(ConfigurationError):
    """A plan name that the loaded files do not define."""


@dataclass(frozen=True)
class Bundle:
    """The fabric and plans of a set of files, valid as a whole.

    ``files`` are the files read, in load order. Script actions that name a ``file`` carry
    that file's text in ``script`` and its absolute path in ``file``, so the snapshot holds
    exactly the code a run executes.
    """

    fabric: Fabric
    plans: dict[str, RecoveryPlan]
    files: list[str] = field(default_factory=list)
    content_hash: str = ""

    def __post_init__(self) -> None:
        if not self.content_hash:
            object.__setattr__(self, "content_hash", _hash(self.snapshot()))

    def snapshot(self) -> dict[str, Any]:
        """The fabric and plans as JSON-able data (credential *references* only, no values)."""
        return {
            "version": 1,
            "fabric": self.fabric.model_dump(mode="json"),
            "plans": {
                name: plan.model_dump(mode="json") for name, plan in sorted(self.plans.items())
            },
        }

    @classmethod
    def from_snapshot(cls, data: Mapping[str, Any]) -> Bundle:
        """Rebuild a bundle from :meth:`snapshot` output (for example one stored with a run)."""
        try:
            fabric = Fabric.model_validate(data["fabric"])
            plans = {
                str(name): RecoveryPlan.model_validate(plan)
                for name, plan in dict(data.get("plans") or {}).items()
            }
        except (KeyError, TypeError, AttributeError, ValidationError) as exc:
            raise ConfigurationError(
                f"not a Ferryman bundle snapshot ({type(exc).__name__}: {exc}); "
                "pass the output of Bundle.snapshot()"
            ) from None
        return cls(fabric=fabric, plans=plans)

    def plan(self, name: str) -> RecoveryPlan:
        """The plan called ``name``; the error lists the plans there are."""
        try:
            return self.plans[name]
        except KeyError:
            known = ", ".join(sorted(self.plans)) or "none"
            raise UnknownPlan(
                f"no recovery plan named {name!r} in {', '.join(self.files) or 'the bundle'}; "
                f"known plans: {known}"
            ) from None


@dataclass(frozen=True)
class ValidationReport:
    """Every problem found in a set of files, and the bundle when there is no error."""

    problems: list[Problem]
    bundle: Bundle | None

    @property
    def errors(self) -> list[Problem]:
        """The problems that refuse the files."""
        return [p for p in self.problems if p.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Problem]:
        """The problems that only inform."""
        return [p for p in self.problems if p.severity is Severity.WARNING]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors


def load_bundle(
    paths: Sequence[str | Path],
    *,
    now: datetime | None = None,
    roots: Sequence[str | Path] = (),
) -> Bundle:
    """Load and check plan and fabric files; raise :class:`PlanInvalid` on any error."""
    report = validate(paths, now=now, roots=roots)
    if report.bundle is None:
        raise PlanInvalid(report.problems)
    return report.bundle


def validate(
    paths: Sequence[str | Path],
    *,
    now: datetime | None = None,
    roots: Sequence[str | Path] = (),
) -> ValidationReport:
    """Check files and their includes; return all problems at once. Never raises for input.

    ``now`` is the moment scheduled replication times are judged against (default: now, UTC).
    Files the plans name (includes, scripts) must lie under the folder of a file in ``paths``,
    a folder in ``roots`` or one listed in ``FERRYMAN_PLAN_ROOTS``.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    with collector_paused():
        return _validate(paths, now, roots)


def _validate(
    paths: Sequence[str | Path], now: datetime | None, roots: Sequence[str | Path]
) -> ValidationReport:
    allowed = allowed_roots(paths, roots)
    reader = _Reader(allowed)
    for path in paths:
        reader.read(str(path), None)
    problems = list(reader.problems)
    if not reader.loaded and not problems:
        problems.append(Problem("<arguments>", 0, 0, "no files given"))
    assembly = _assemble(reader.loaded, problems)
    if assembly is not None:
        fabric, fabric_file, plans, plan_files = assembly
        context = RuleContext(
            now=now,
            plan_dirs={n: os.path.dirname(f.file) for n, f in plan_files.items()},
            roots=tuple(allowed),
        )
        findings = check_bundle(fabric, plans, context)
        for rule in (*INPUT_RULES, *PROTECTION_RULES):
            findings.extend(rule(fabric, plans, context))
        for finding in findings:
            problems.append(_locate(finding, fabric_file, plan_files))
    problems = sort_problems(problems)
    if any(p.is_error for p in problems) or assembly is None:
        return ValidationReport(problems, None)
    fabric, _, plans, plan_files = assembly
    inlined: dict[str, RecoveryPlan] = {}
    for name, plan in plans.items():
        inlined[name], script_problems = _inline_scripts(name, plan, plan_files[name], allowed)
        problems.extend(script_problems)
    if any(p.is_error for p in problems):
        return ValidationReport(sort_problems(problems), None)
    bundle = Bundle(fabric=fabric, plans=inlined, files=[f.file for f in reader.loaded])
    return ValidationReport(problems, bundle)


def allowed_roots(paths: Sequence[str | Path], extra: Sequence[str | Path] = ()) -> list[str]:
    """Folders named files may lie in: those of ``paths``, ``extra``, ``FERRYMAN_PLAN_ROOTS``."""
    roots: list[str] = []
    for path in [*paths]:
        try:
            roots.append(os.path.dirname(os.path.realpath(path)))
        except (ValueError, OSError):
            continue  # reported when the file is read
    for root in [*extra]:
        roots.append(os.path.realpath(root))
    roots.extend(configured_roots(PLAN_ROOTS_VARIABLE))
    return list(dict.fromkeys(roots))


class _Reader:
    """Loads files depth-first through their includes, each file once, refusing cycles.

    Includes must name ``.yaml``/``.yml`` files under the allowed roots, so a plan cannot
    make the loader read (and quote in its errors) any other file.
    """

    def __init__(self, roots: list[str]) -> None:
        self.roots = roots
        self.loaded: list[LoadedFile] = []
        self.problems: list[Problem] = []
        self.seen: set[str] = set()
        self.stack: list[tuple[str, str]] = []  # (real path, display name)

    def read(self, display: str, origin: tuple[LoadedFile, DocPath] | None) -> None:
        try:
            real = os.path.realpath(display)
        except (ValueError, OSError):  # a NUL byte in the name, a name too long
            message = f"{display!r} is not a usable file name"
            if origin is None:
                self.problems.append(Problem(display, 0, 0, message))
            else:
                self._at(origin, message)
            return
        if origin is not None:
            problem = self._include_problem(display, real)
            if problem:
                self._at(origin, problem)
                return
        for stacked_real, _ in self.stack:
            if stacked_real == real and origin is not None:
                chain = " -> ".join([*(name for _, name in self.stack), display])
                self._at(origin, f"include cycle: {chain}; remove one of the includes")
                return
        if real in self.seen:
            return
        if len(self.seen) >= MAX_FILES:
            if origin is not None:
                self._at(origin, f"more than {MAX_FILES} files in one bundle")
            return
        self.seen.add(real)
        result = load_file(display)
        if isinstance(result, Problem):
            if origin is not None and result.line == 0:
                # A whole-file problem (missing, a directory, too large) is best shown
                # where the include names the file.
                self._at(origin, f"included file {display!r}: {result.message}")
            else:
                self.problems.append(result)
            return
        self.problems.extend(result.problems)
        self.loaded.append(result)
        includes = result.data.get("include")
        if not isinstance(includes, list):
            return  # a wrong type is reported by the structural check
        self.stack.append((real, display))
        base = os.path.dirname(display)
        for index, item in enumerate(includes):
            if isinstance(item, str) and item.strip():
                target = os.path.normpath(os.path.join(base, os.path.expanduser(item)))
                self.read(target, (result, ("include", index)))
        self.stack.pop()

    def _include_problem(self, display: str, real: str) -> str | None:
        if not within(real, self.roots):
            return (
                f"included file {display!r} is outside the allowed folders "
                f"({', '.join(self.roots) or 'none'}); move it there or add its folder to "
                f"{PLAN_ROOTS_VARIABLE}"
            )
        if not display.lower().endswith(PLAN_SUFFIXES) and not os.path.isdir(real):
            return (
                f"included file {display!r} is not a .yaml or .yml file; include names plan "
                "and fabric files only"
            )
        return None

    def _at(self, origin: tuple[LoadedFile, DocPath], message: str) -> None:
        loaded, path = origin
        line, col = loaded.marks.value(path)
        self.problems.append(Problem(loaded.file, line, col, message, path))


_Assembly = tuple[Fabric, LoadedFile, dict[str, RecoveryPlan], dict[str, LoadedFile]]


def _assemble(loaded: list[LoadedFile], problems: list[Problem]) -> _Assembly | None:
    """Check each file's structure and gather one fabric and the plans of all files.

    Parts that are valid on their own (the fabric, each plan) are kept even when a sibling is
    broken, so the semantic rules still run on them and report their problems too.
    """
    fabric: Fabric | None = None
    fabric_file: LoadedFile | None = None
    plans: dict[str, RecoveryPlan] = {}
    plan_files: dict[str, LoadedFile] = {}
    for item in loaded:
        # a valid document's fabric and plans are those validated here, not validated again
        document, found = validated_structure(Document, item.data, item.marks, item.file)
        problems.extend(found)
        if "fabric" in item.data and item.data["fabric"] is not None:
            if fabric_file is not None:
                line, col = item.marks.key(("fabric",))
                first_line = fabric_file.marks.key(("fabric",))[0]
                problems.append(
                    Problem(
                        item.file,
                        line,
                        col,
                        f"a second fabric (the first is in {fabric_file.file} on line "
                        f"{first_line}); a bundle has one fabric, so include its file once",
                        ("fabric",),
                    )
                )
            else:
                fabric_file = item
                fabric = (
                    document.fabric if document is not None else _quiet(Fabric, item.data["fabric"])
                )
        raw_plans = item.data.get("plans")
        if not isinstance(raw_plans, dict):
            continue
        for name, raw in raw_plans.items():
            if name in plan_files:
                line, col = item.marks.key(("plans", name))
                first = plan_files[name]
                first_line = first.marks.key(("plans", name))[0]
                problems.append(
                    Problem(
                        item.file,
                        line,
                        col,
                        f"plan {name!r} is defined twice (first in {first.file} on line "
                        f"{first_line}); rename one",
                        ("plans", name),
                    )
                )
                continue
            plan_files[name] = item
            plan = document.plans.get(name) if document is not None else None
            if plan is None:
                plan = _quiet(RecoveryPlan, raw)
            if plan is not None:
                plans[name] = plan
    if fabric_file is None:
        if loaded:
            first = loaded[0]
            problems.append(
                Problem(
                    first.file,
                    1,
                    1,
                    "no fabric: add a 'fabric' section or include the fabric file "
                    "(include: [fabric.yaml])",
                )
            )
        return None
    if fabric is None:
        return None  # its structural problems are already reported
    return fabric, fabric_file, plans, {n: plan_files[n] for n in plans}


def _quiet(model: Any, data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError:
        return None


def _locate(
    finding: Finding, fabric_file: LoadedFile, plan_files: dict[str, LoadedFile]
) -> Problem:
    """Turn a rule finding (a path in the bundle) into a problem at a file position."""
    source = fabric_file
    if finding.path[:1] == ("plans",) and len(finding.path) > 1:
        source = plan_files.get(str(finding.path[1]), fabric_file)
    marks = source.marks
    line, col = marks.key(finding.path) if finding.at_key else marks.value(finding.path)
    return Problem(source.file, line, col, finding.message, finding.path, finding.severity)


def _inline_scripts(
    name: str, plan: RecoveryPlan, source: LoadedFile, roots: list[str]
) -> tuple[RecoveryPlan, list[Problem]]:
    """Carry script files' text in the plan, so the snapshot holds what will run.

    ``file`` keeps the path as written (relative to the plan file), so the snapshot and its
    hash do not depend on where the files are checked out.
    """
    base = Path(source.file).parent
    problems: list[Problem] = []
    groups = []
    for g, group in enumerate(plan.groups):
        actions: dict[str, list[Any]] = {"pre": [], "post": []}
        for phase in ("pre", "post"):
            for a, action in enumerate(getattr(group, phase)):
                if isinstance(action, ScriptAction) and action.file and action.script is None:
                    path = ("plans", name, "groups", g, phase, a, "file")
                    try:
                        text = _read_script(base / action.file, roots)
                    except ConfigurationError as exc:
                        line, col = source.marks.value(path)
                        problems.append(Problem(source.file, line, col, str(exc), path))
                    else:
                        action = action.model_copy(update={"script": text})
                actions[phase].append(action)
        groups.append(group.model_copy(update=actions))
    return plan.model_copy(update={"groups": groups}), problems


def _read_script(path: Path, roots: list[str]) -> str:
    try:
        real = resolve_under(
            path, roots, what="script file", hint=f"add its folder to {PLAN_ROOTS_VARIABLE}"
        )
        raw = read_bounded(real, limit=MAX_TEXT_BYTES, what="script file")
    except FileRefused as exc:
        raise ConfigurationError(str(exc)) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigurationError(f"script file {str(path)!r} is not UTF-8 text") from None


def _hash(snapshot: dict[str, Any]) -> str:
    canonical = json.dumps(snapshot, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

"""Hostile plan files: seeded mutations of the example plan through ``plans.validate`` and
``ferryman plan validate``. Every file gets an answer, never a crash: either it is valid, or
every error is one ``FILE:LINE:COL: message`` line, and the command exits 0 or 1 accordingly.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from plans import validate
from plans.cli import plan as plan_group
from tests.reliability.drill import PLAN_FILE

FAST_CASES = 100
SLOW_CASES = 1000
# Not a real command: if YAML tags were honoured, this file would appear.
CANARY = Path("/tmp/ferryman-reliability-canary")
HOSTILE = [
    "'; Remove-VM -Force; '",
    '"; $(Stop-Computer) "',
    "`$env:PATH`",
    "a\nb: c",
    "\t",
    "{",
    "[",
    "*alias",
    "&anchor x",
    f'!!python/object/apply:os.system ["touch {CANARY}"]',
    "!!binary AAAA",
    "%YAML 9.9",
    "---",
    "Åland-Ж中😀",
    "\u202e\u200b",
    "\x00",
    "x" * 5000,
    "- - - -",
    "? complex key",
    "1e400",
    "-0x1F",
    "~",
    "<<: *base",
]
PROBLEM_LINE = re.compile(r"^.+:\d+:\d+: .+$")


def mutate(text: str, rng: random.Random) -> str:
    """One to three seeded edits of a YAML text."""
    lines = text.splitlines()
    for _ in range(rng.randint(1, 3)):
        where = rng.randrange(len(lines)) if lines else 0
        edit = rng.randrange(7)
        if edit == 0 and lines:
            del lines[where]
        elif edit == 1 and lines:
            lines.insert(where, lines[where])
        elif edit == 2 and lines:  # hostile text inside a line
            line = lines[where]
            cut = rng.randint(0, len(line))
            lines[where] = line[:cut] + rng.choice(HOSTILE) + line[cut:]
        elif edit == 3 and lines:  # a value replaced
            line = lines[where]
            if ":" in line:
                key = line.split(":", 1)[0]
                lines[where] = f"{key}: {rng.choice(HOSTILE)}"
        elif edit == 4:  # truncated
            lines = lines[:where]
        elif edit == 5 and lines:  # indentation broken
            lines[where] = " " * rng.randint(0, 9) + lines[where].lstrip()
        else:  # a hostile line
            lines.insert(where, rng.choice(HOSTILE))
    return "\n".join(lines) + rng.choice(["\n", ""])


def check_case(directory: Path, rng: random.Random, runner: CliRunner) -> bool:
    """Write one mutated plan (sometimes a mutated fabric too) and check both entry points."""
    plan_text = PLAN_FILE.read_text(encoding="utf-8")
    fabric_text = (PLAN_FILE.parent / "fabric.yaml").read_text(encoding="utf-8")
    if rng.random() < 0.3:
        fabric_text = mutate(fabric_text, rng)
    else:
        plan_text = mutate(plan_text, rng)
    (directory / "fabric.yaml").write_text(fabric_text, encoding="utf-8", errors="surrogatepass")
    plan = directory / "three-tier.yaml"
    plan.write_text(plan_text, encoding="utf-8", errors="surrogatepass")

    report = validate([plan])
    for problem in report.errors:
        assert PROBLEM_LINE.match(str(problem)), repr(str(problem))
        assert "\n" not in str(problem)
    result = runner.invoke(plan_group, ["validate", str(plan)])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}\n{plan_text}"
    )
    assert result.exit_code == (0 if report.ok else 1), result.output
    if not report.ok:
        assert str(report.errors[0]) in result.output
    return report.ok


def run_cases(tmp_path: Path, count: int, seed: int) -> tuple[int, int]:
    """``count`` seeded cases; returns (valid, refused)."""
    rng = random.Random(seed)
    runner = CliRunner()
    CANARY.unlink(missing_ok=True)
    valid = 0
    for index in range(count):
        directory = tmp_path / f"case-{index}"
        directory.mkdir()
        valid += check_case(directory, rng, runner)
    assert not CANARY.exists(), "a YAML tag ran a command"
    return valid, count - valid


def test_fuzzed_plans_get_clear_answers(tmp_path: Path) -> None:
    _valid, refused = run_cases(tmp_path, FAST_CASES, seed=11)
    assert refused > FAST_CASES // 2  # the mutations really break files


@pytest.mark.slow
def test_a_thousand_fuzzed_plans_get_clear_answers(tmp_path: Path) -> None:
    valid, refused = run_cases(tmp_path, SLOW_CASES, seed=2026)
    print(f"\n{SLOW_CASES} fuzzed plan files: {refused} refused with errors, {valid} valid")
    assert refused > SLOW_CASES // 2

"""``ferryman plan``: validate, show and describe plan and fabric files.

``validate`` prints every problem on **standard output**, one per line as
``FILE:LINE:COL: message`` (warnings as ``FILE:LINE:COL: warning: message``), then a summary
line; exit status 1 on any error (or any warning with ``--strict``), else 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from plans.bundle import UnknownPlan, validate
from plans.render import render_plan
from plans.schema import document_schema


@click.group(name="plan")
def plan() -> None:
    """Check and inspect recovery-plan and fabric files."""


@plan.command(name="validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--strict", is_flag=True, help="Treat warnings as errors (exit 1).")
def validate_command(files: tuple[Path, ...], strict: bool) -> None:
    """Check FILES and everything they include; print every problem at once."""
    report = validate(list(files))
    for problem in report.problems:
        click.echo(str(problem))
    errors, warnings = len(report.errors), len(report.warnings)
    if report.bundle is not None and not (strict and warnings):
        bundle = report.bundle
        vms = {vm for p in bundle.plans.values() for vm in p.vm_names()}
        summary = f"OK: {_count(len(bundle.plans), 'plan')}, {_count(len(vms), 'VM')}"
        if warnings:
            summary += f" ({_count(warnings, 'warning')})"
        click.echo(summary)
        return
    click.echo(f"FAILED: {_count(errors, 'error')}, {_count(warnings, 'warning')}")
    raise SystemExit(1)


@plan.command(name="show")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--plan", "plan_name", help="Show only this plan.")
def show_command(files: tuple[Path, ...], plan_name: str | None) -> None:
    """Show the plans of FILES as trees: groups, actions, VMs and DNS records."""
    report = validate(list(files))
    if report.bundle is None:
        for problem in report.problems:
            click.echo(str(problem), err=True)
        click.echo("the files have errors; fix them first (ferryman plan validate)", err=True)
        raise SystemExit(1)
    bundle = report.bundle
    names = sorted(bundle.plans)
    if plan_name is not None:
        try:
            bundle.plan(plan_name)
        except UnknownPlan as exc:
            click.echo(str(exc), err=True)
            raise SystemExit(1) from None
        names = [plan_name]
    if not names:
        click.echo(f"no plans in {', '.join(bundle.files)}")
        return
    trees = [render_plan(name, bundle.plans[name], bundle.fabric) for name in names]
    click.echo("\n\n".join(trees))


@plan.command(name="schema")
def schema_command() -> None:
    """Print the JSON Schema of plan and fabric files."""
    click.echo(json.dumps(document_schema(), indent=2))


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"

"""The web console (placeholder until its pages land)."""

from __future__ import annotations

from fastapi import APIRouter


def router() -> APIRouter:
    """The console's pages."""
    return APIRouter(include_in_schema=False)

"""The HTTP API (``/api/v1``), its web console and its metrics, served by ``ferryman serve``.

A composition root like the CLI: it wires the store, the broker and the engine
(:mod:`workers.embedded`), authenticates every request (:mod:`workflows.tokens`) and acts only
through the same functions the CLI calls (:mod:`workflows.api.actions`).
"""

"""Pausing Python's cyclic garbage collector while a large plan is built.

Validating and starting a 5,000-VM plan allocates some million objects that live on (the
loaded data, its marks, the models, the compiled run), almost none of them in reference
cycles. The collector, counting those allocations, runs its full passes over everything alive
again and again meanwhile: about as long as the work itself. Paused, it runs when the work is
done, as usual. Reference counting frees everything else as always.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run the block with the cyclic collector paused; it resumes after the block if it was
    running before (nested and concurrent uses never leave it paused)."""
    running = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if running:
            gc.enable()

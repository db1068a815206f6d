"""Borrowed internals, behind one door: the private parts of prometheus-client and structlog the hot path uses.

Each is used because no public way does the same, each library's version is bounded above in
pyproject.toml, and a self-check at import fails loudly (ImportError naming the package) when an
upgrade changed what is borrowed, instead of counting wrong in production.

- prometheus-client's Histogram has no public way to add counts to a bucket. The server keeps its
  handling-time counts as plain integers (an observe() walks the buckets in Python and takes a
  lock: about 7 % of a call's instructions with the other per-call updates, callgrind, make bench)
  and adds them to the histogram's per-bucket values and its sum when scraped. A custom collector
  is the supported way, but it cannot serve the workers' multiprocess mode, whose values live in
  files that only the library's own value classes write; so the values are borrowed.
- structlog's context variables carry a fixed name prefix; the fused JSON processor (logs.py)
  merges them itself, one pass instead of merge_contextvars' call.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from structlog import contextvars as structlog_contextvars

STRUCTLOG_KEY_PREFIX: str = structlog_contextvars.STRUCTLOG_KEY_PREFIX
STRUCTLOG_KEY_PREFIX_LEN: int = len(STRUCTLOG_KEY_PREFIX)


def histogram_values(histogram: Histogram) -> tuple[tuple[float, ...], Sequence[Any], Any]:
    """A labelled histogram's bucket bounds (the last is +Inf), its per-bucket values (not cumulative),
    and its sum's value; each value has ``inc(amount)``."""
    return tuple(histogram._upper_bounds), histogram._buckets, histogram._sum


def check_prometheus_client(histogram_class: type[Histogram] = Histogram) -> None:
    """Raise ImportError unless adding to the borrowed values shows in what the histogram exposes."""
    histogram = histogram_class("borrowed_check_seconds", "check", buckets=(0.1, 1.0), registry=CollectorRegistry())
    try:
        bounds, buckets, total = histogram_values(histogram)
        buckets[1].inc(2)
        total.inc(0.5)
        samples = next(iter(histogram.collect())).samples
        [sample] = [s for s in samples if s.name.endswith("_bucket") and s.labels["le"] == "1.0"]
        [summed] = [s for s in samples if s.name.endswith("_sum")]
        ok = bounds == (0.1, 1.0, float("inf")) and sample.value == 2 and summed.value == 0.5
    except (AttributeError, IndexError, TypeError, ValueError, KeyError):
        ok = False
    if not ok:
        raise ImportError(
            f"prometheus-client {version('prometheus-client')} changed the Histogram internals "
            "service/observability/borrowed.py relies on (_upper_bounds, _buckets, _sum): "
            "check them, then raise its bound"
        )


def check_structlog() -> None:
    """Raise ImportError unless structlog's bound variables carry STRUCTLOG_KEY_PREFIX."""
    import contextvars

    with structlog_contextvars.bound_contextvars(borrowed_check=1):
        names = [var.name for var, value in contextvars.copy_context().items() if value == 1]
    if STRUCTLOG_KEY_PREFIX + "borrowed_check" not in names:
        raise ImportError(
            f"structlog {version('structlog')} no longer names its context variables with "
            f"{STRUCTLOG_KEY_PREFIX!r}, which service/observability/logs.py relies on: "
            "check it, then its bound in pyproject.toml"
        )


check_prometheus_client()
check_structlog()

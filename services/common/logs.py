"""Structured JSON logs that join up: each line carries its call's ids.

Every line has the service's name and the request id of the call being served; the trace id
and span id of the span in progress when tracing is on (services/common/tracing.py), so a line
finds its trace and a trace its lines; and the merchant and payment ids where the code knows
them (`bind`).
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType

from pythonjsonlogger.json import JsonFormatter

from services.common import tracing

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
# Ids known for the work in hand (merchant_id, payment_id...), added to each of its lines.
# Never mutated: `bind` sets a new mapping.
_bound_var: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "log_ids", default=MappingProxyType({})
)


def bind(**ids: str) -> None:
    """Adds `ids` to every later line of the call (or task) in hand."""
    _bound_var.set({**_bound_var.get(), **ids})


@contextmanager
def bound(**ids: str) -> Iterator[None]:
    """Adds `ids` to every line logged inside the block (a job, in a worker thread)."""
    token = _bound_var.set({**_bound_var.get(), **ids})
    try:
        yield
    finally:
        _bound_var.reset(token)


class _RequestIdFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.service = self.service
        ids = tracing.log_ids()
        if ids is not None:
            record.trace_id, record.span_id = ids
        for name, value in _bound_var.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


def configure_logging(*, service: str, level: str = "INFO", json: bool = True) -> None:
    """Sends every log record to stderr, one JSON object per line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter(service))
    if json:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(service)s %(request_id)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s [%(service)s %(request_id)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)

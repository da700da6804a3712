"""Logs: one JSON object per line, carrying the trace and span ids of the span current when
the line was written and the executing operation's name, so that a log line leads to its
trace and a trace to its lines. `LOG_FORMAT=text` gives plain lines for a terminal.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from typing import Any

import orjson
from opentelemetry import trace

from app.config.settings import Settings

# The executing operation's name (set through the observer by app/execution/policy.OperationPolicy).
OPERATION: ContextVar[str | None] = ContextVar("gateway_operation", default=None)
# Attributes every LogRecord has; anything else was passed in `extra` and is logged as a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName", "color_message"}


class JsonFormatter(logging.Formatter):
    # The time's second, formatted once per second (a line per request: the access log).
    _second = -1
    _stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        out: dict[str, Any] = {
            "time": f"{self._stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,  # which worker, when there are several
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            out["trace_id"] = format(ctx.trace_id, "032x")
            out["span_id"] = format(ctx.span_id, "016x")
        operation = OPERATION.get()
        if operation:
            out["operation"] = operation
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and value is not None:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def logging_config(settings: Settings) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the gateway and uvicorn, in every worker."""
    # What no formatter here writes is not collected for each record (the logging HOWTO's
    # "Optimization"): the caller's file and line (a walk up the stack), the thread's and
    # the multiprocessing process's names.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    formatter: dict[str, Any] = (
        {"()": "app.telemetry.logs.JsonFormatter"} if settings.log_format == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"})
    level = settings.log_level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "default",
                                "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            # uvicorn's own handlers would print a second, unformatted copy.
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": True},
        },
    }

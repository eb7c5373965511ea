"""Log set-up for every ``vshare`` command: human text or one JSON object per line.

Structured fields travel in ``extra={"fields": {...}}`` of a log call (the attach audit line,
session events); the text format appends them as ``key=value``, the JSON format as keys.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Final

FORMATS: Final = ("text", "json")
#: Chosen once by ``vshare --log-format`` (or $VSHARE_LOG_FORMAT) for the command that runs.
default_format = "text"

_STANDARD: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)))


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    """``{"ts": ..., "level": ..., "logger": ..., "msg": ..., <fields>}`` per line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _fields(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        fields = _fields(record)
        if fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return text


def setup_logging(verbose: int = 0, fmt: str | None = None) -> None:
    """Log to stderr at INFO (DEBUG with ``verbose``), as ``text`` or ``json`` (default:
    what ``--log-format`` chose)."""
    fmt = fmt or default_format
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)

"""The CLI as a client of the REST API: where the API is, which token to use, one call,
and how answers are printed.

Where the endpoint and token come from, first found wins:

1. ``--endpoint`` / ``--token``;
2. ``$VSHARE_ENDPOINT`` / ``$VSHARE_TOKEN``;
3. the config file: ``$VSHARE_CONFIG``, else ``$XDG_CONFIG_HOME/vshare/client.toml``, else
   ``~/.config/vshare/client.toml``, with ``endpoint = "http://host:8564"`` and
   ``token = "..."``;
4. the endpoint defaults to ``http://127.0.0.1:8564`` (the all-in-one node); a token has
   no default.

Exit codes (``cli/_fail.py`` has the policy): 0 done; 1 the API refused (its message, one
line); 2 a usage mistake (click's, a missing or malformed token (not printable ASCII, a line
break), a bad config file, or a ``$VSHARE_CONFIG`` that names no file); 3 the API cannot be
reached (the endpoint is named). Never a traceback: every failure is one
``vshare: <message>`` line on stderr.
"""

from __future__ import annotations

import functools
import json
import os
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import click

from vshare.cli._fail import EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE, fail, one_line

DEFAULT_ENDPOINT: Final = "http://127.0.0.1:8564"
#: Seconds to wait for a connection, and for an answer (a forced delete of a large share
#: removes every file before it answers).
CONNECT_TIMEOUT: Final = 5.0
ANSWER_TIMEOUT: Final = 600.0
_TOKEN: Final = re.compile(r"[\x21-\x7e]+")


def config_path() -> Path:
    """The client config file this process would read (it may not exist)."""
    if env := os.environ.get("VSHARE_CONFIG"):
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "vshare" / "client.toml"


def _read_config(path: Path) -> dict[str, str]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if os.environ.get("VSHARE_CONFIG"):  # named on purpose: a typo must not pass
            fail(f"config {path} (VSHARE_CONFIG): no such file", EXIT_USAGE)
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        fail(f"config {path}: {exc}", EXIT_USAGE)
    out: dict[str, str] = {}
    for key, value in data.items():
        if key not in ("endpoint", "token"):
            fail(f"config {path}: unknown key {key!r} (known: endpoint, token)", EXIT_USAGE)
        if not isinstance(value, str):
            fail(f"config {path}: {key} must be a string", EXIT_USAGE)
        out[key] = value
    return out


def _check_token(token: str, source: str) -> None:
    """A bearer token is printable ASCII without spaces (RFC 6750's b64token is narrower):
    anything else cannot be sent in a header, and is a mistake to say in one line."""
    if _TOKEN.fullmatch(token):
        return
    if any(ord(c) > 0x7E for c in token):
        what = "a non-ASCII character"
    elif any(c in "\r\n" for c in token):
        what = "a line break"
    else:
        what = "a space or control character"
    fail(
        f"invalid API token ({source}): it holds {what}; a token is printable ASCII without spaces",
        EXIT_USAGE,
    )


def _normalize_endpoint(endpoint: str) -> str:
    endpoint = endpoint.strip().rstrip("/")
    if "://" not in endpoint:
        endpoint = "http://" + endpoint  # "127.0.0.1:8564"
    scheme = endpoint.split("://", 1)[0].lower()
    if scheme not in ("http", "https") or endpoint.endswith("://"):
        fail(f"endpoint {endpoint!r}: expected http://HOST:PORT or https://...", EXIT_USAGE)
    return endpoint


def segment(value: str) -> str:
    """``value`` as one URL path segment (a share name may hold ``?``, ``#``, ``%``...)."""
    return quote(value, safe="")


@dataclass(frozen=True)
class Remote:
    """One command's view of the API: endpoint, token, and whether to print JSON."""

    endpoint: str
    token: str | None
    as_json: bool
    config: Path

    @classmethod
    def resolve(cls, endpoint: str | None, token: str | None, as_json: bool) -> Remote:
        """Fill in what the flags (and click's env lookup) left out from the config file."""
        path = config_path()
        source = "--token or VSHARE_TOKEN"
        if endpoint is None or token is None:
            config = _read_config(path)
            endpoint = endpoint or config.get("endpoint")
            if not token and config.get("token"):
                token, source = config["token"], f"token in {path}"
        if token:
            _check_token(token, source)
        return cls(_normalize_endpoint(endpoint or DEFAULT_ENDPOINT), token, as_json, path)

    def call(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """One request; returns the decoded JSON answer (None for 204). Exits with one
        line on any failure (see the module note for the codes)."""
        import httpx  # here, not at import: `vshare gateway run` need not load it

        if not self.token:
            fail(
                'no API token: give --token, set VSHARE_TOKEN, or put token = "..." in'
                f" {self.config}",
                EXIT_USAGE,
            )
        url = self.endpoint + path
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = httpx.request(
                method,
                url,
                json=body,
                params=query,
                headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"},
                timeout=httpx.Timeout(ANSWER_TIMEOUT, connect=CONNECT_TIMEOUT),
            )
        except httpx.InvalidURL as exc:
            fail(f"endpoint {self.endpoint!r}: {exc}", EXIT_USAGE)
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            fail(f"cannot reach the vshare API at {self.endpoint}: {reason}", EXIT_UNREACHABLE)
        if response.status_code >= 400:
            fail(_error_message(response.status_code, response.content), EXIT_REFUSED)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            fail(f"the API at {self.endpoint} answered with something that is not JSON")

    def print_json(self, data: Any) -> None:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))

    def echo(self, answer: Any, message: str) -> None:
        """Print ``answer`` as JSON under ``--json``, else ``message``: one line for people."""
        if self.as_json:
            self.print_json(answer)
        else:
            click.echo(message)

    def render(self, answer: Any, draw: Callable[[Any], None]) -> None:
        """Print ``answer`` as JSON under ``--json``, else as ``draw`` lays it out for people
        (a table, ``key: value`` lines)."""
        if self.as_json:
            self.print_json(answer)
        else:
            draw(answer)


def _error_message(status: int, content: bytes) -> str:
    try:
        message = json.loads(content)["error"]["message"]
        if isinstance(message, str) and message:
            return message
    except (ValueError, KeyError, TypeError):
        pass
    return f"the API answered HTTP {status}"


def remote_options(f: Callable[..., None]) -> Callable[..., None]:
    """``--endpoint``, ``--token`` and ``--json``, for every command that calls the API: the
    command takes ``remote``, the :class:`Remote` they resolve to, in their place (resolved
    before the command runs, so a bad config file or token is said first)."""

    @functools.wraps(f)
    def command(
        *args: Any, endpoint: str | None, token: str | None, as_json: bool, **kwargs: Any
    ) -> None:
        f(*args, remote=Remote.resolve(endpoint, token, as_json), **kwargs)

    wrapped = click.option(
        "--json", "as_json", is_flag=True, help="Print the API's JSON answer (for scripts)."
    )(command)
    wrapped = click.option(
        "--token",
        envvar="VSHARE_TOKEN",
        metavar="TOKEN",
        help="API token [env VSHARE_TOKEN; config token].",
    )(wrapped)
    return click.option(
        "--endpoint",
        envvar="VSHARE_ENDPOINT",
        metavar="URL",
        help=f"The API [env VSHARE_ENDPOINT; config endpoint; default {DEFAULT_ENDPOINT}].",
    )(wrapped)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print aligned columns: a header line, then one line per row (values made
    printable)."""
    cells = [list(headers)] + [[one_line(str(v)) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def fields(pairs: Sequence[tuple[str, object]]) -> None:
    """Print ``key: value`` lines, keys aligned (the ``show`` commands)."""
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        click.echo(f"{key + ':':<{width + 1}} {one_line(str(value))}")

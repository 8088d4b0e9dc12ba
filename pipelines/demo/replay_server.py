"""The base of the local provider-API stand-ins: real HTTP on 127.0.0.1, a request log, scripted failures.

A subclass answers ``respond(method, target, headers)`` with a :class:`Reply`; this module runs the
socket server (stdlib ``http.server``, a free port, a daemon thread), records every request, and
queues :class:`Failure` replies that tests inject (a 429 with ``Retry-After``, a 500, a body that is
not JSON), each used by the next authorized data request. ``start()``/``stop()`` or ``with``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Failure:
    """A scripted reply for the next data request: a status, optional ``Retry-After``, optional raw body."""

    status: int
    retry_after: str | None = None
    body: bytes | None = None


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    query: dict[str, list[str]]
    authorized: bool


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class BadRequest(ValueError):
    """A query the provider would refuse with 400, naming the parameter."""

    def __init__(self, param: str | None, message: str) -> None:
        super().__init__(message)
        self.param, self.message = param, message


class ReplayServer:
    """Runs a provider stand-in on 127.0.0.1; ``base_url`` is set once started."""

    thread_name = "replay-server"

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._failures: deque[Failure] = deque()
        self._lock = threading.Lock()
        self._served = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        if self._httpd is None:
            self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
            self._httpd.daemon_threads = True
            # A short poll interval keeps stop() fast (shutdown waits for the next poll).
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=self.thread_name, daemon=True
            )
            self._thread.start()
        return self.base_url

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._httpd = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, *failures: Failure) -> None:
        """Queue failures; each answers one future authorized data request, in order."""
        with self._lock:
            self._failures.extend(failures)

    # --- for subclasses ---------------------------------------------------------------------

    def respond(self, method: str, target: str, headers: Mapping[str, str]) -> Reply:
        raise NotImplementedError

    def record(self, path: str, query: dict[str, list[str]], authorized: bool) -> int:
        """Log a request; returns its 1-based number (for request ids)."""
        with self._lock:
            self.requests.append(RecordedRequest(path, query, authorized))
            self._served += 1
            return self._served

    def next_failure(self) -> Failure | None:
        with self._lock:
            return self._failures.popleft() if self._failures else None


def parse_target(target: str) -> tuple[str, dict[str, list[str]]]:
    """The path and the query (every value of repeated keys, blanks kept) of a request target."""
    url = urlsplit(target)
    return url.path, parse_qs(url.query, keep_blank_values=True)


def query_values(query: Mapping[str, list[str]], name: str) -> list[str]:
    """A repeated parameter, accepting both ``name=x`` and the bracket form ``name[]=x``."""
    return [v for key in (name, f"{name}[]") for v in query.get(key, []) if v != ""]


def int_param(query: Mapping[str, list[str]], name: str, *, required: bool) -> int | None:
    values = query_values(query, name)
    if not values:
        if required:
            raise BadRequest(name, f"Missing required parameter: '{name}'.")
        return None
    try:
        return int(values[0])
    except ValueError:
        raise BadRequest(name, f"Invalid value for '{name}': expected an integer, got {values[0]!r}.") from None


def _handler_for(server: ReplayServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart

        def do_GET(self) -> None:
            self._send(server.respond("GET", self.path, self.headers))

        def _send(self, reply: Reply) -> None:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler

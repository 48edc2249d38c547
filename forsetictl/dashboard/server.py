"""The dashboard's I/O: an HTTP server (the page, its JSON, its server-sent events and
its admin actions) in front of one :class:`Client`, and two threads that keep the
:class:`Board` true: one follows the cluster's events (one stream, fanned out to every
open page), one asks for the nodes and the leader every ``REFRESH`` seconds and soon
after an event.

Only the client's public methods are used, each under one lock (a page's request, the
refresher and the follower take turns on it)."""

from __future__ import annotations

import ipaddress
import json
import queue
import re
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from ..client import AccessDenied, Client, ForsetiError, Timeout
from .state import PAGE, Board

REFRESH = 2.0  # seconds between two looks at the nodes and the leader
SOON = 0.25  # after an event, the nodes are asked for again this soon (at most this often)
KEEPALIVE = 15.0  # seconds between two comments on a quiet event stream
BACKLOG = 1000  # messages a slow page may fall behind before it is cut off (it reconnects)
BODY_MAX = 4096
JOIN = 10.0  # seconds to wait for a thread at close
PROBE = " dashboard role probe"  # a node name no node has (undrain is harmless either way)
STATIC = {"/": "index.html", "/app.js": "app.js", "/style.css": "style.css"}
TYPES = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


class ListenError(ValueError):
    """A --listen address that cannot be used (the message says why)."""


def listen_address(text: str, insecure: bool) -> tuple[str, int]:
    """HOST:PORT as bind takes it; a host that is not loopback only with ``insecure``."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ListenError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8470")
    if not insecure and not _loopback(host):
        raise ListenError(
            f"--listen {text!r} is not loopback: anyone who reaches it acts with this dashboard's key; "
            "give --insecure to bind it anyway (behind a proxy that authenticates, say)"
        )
    return host, int(port)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Hub:
    """The open pages' event streams: each a queue that the follower and the refresher
    put messages in; a page too slow to keep up is cut off (it reconnects, afresh)."""

    def __init__(self) -> None:
        self.pages: set[queue.Queue] = set()

    def join(self) -> queue.Queue:
        q: queue.Queue = queue.Queue(BACKLOG)
        self.pages.add(q)
        return q

    def leave(self, q: queue.Queue) -> None:
        self.pages.discard(q)

    def publish(self, kind: str, data) -> None:
        text = f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()
        for q in list(self.pages):
            try:
                q.put_nowait(text)
            except queue.Full:
                self.leave(q)
                _end(q)

    def close(self) -> None:
        for q in list(self.pages):
            self.leave(q)
            _end(q)


def _end(q: queue.Queue) -> None:
    """Tell a page's stream to end (None), even if its queue is full."""
    try:
        while True:
            q.get_nowait()
    except queue.Empty:
        pass
    q.put_nowait(None)


class Dashboard:
    """The board, the hub and the threads that feed them, around one client."""

    def __init__(self, client: Client, refresh: float = REFRESH) -> None:
        self.client = client
        self.refresh = refresh
        self.board = Board()
        self.hub = Hub()
        self.lock = threading.Lock()  # the board and the hub: changed and read together
        self._asking = threading.Lock()  # the client: one request at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._follow, name="dashboard-events", daemon=True),
            threading.Thread(target=self._look, name="dashboard-nodes", daemon=True),
        ]

    def ask(self, method: Callable, *args, **kwargs):
        with self._asking:
            return method(*args, **kwargs)

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            if t.is_alive():
                t.join(JOIN)  # (a request under way ends at its timeout)
        with self.lock:
            self.hub.close()

    # -- the refresher: nodes, leader, role --

    def _look(self) -> None:
        while not self._stop.is_set():
            self.look()
            self._wake.wait(self.refresh)
            self._wake.clear()
            self._stop.wait(SOON)  # (a burst of events: one look)

    def look(self) -> None:
        """Ask for the nodes and the leader (and, until known, this key's role)."""
        learnt = False
        try:
            if self.board.role == "unknown":
                role = self._role()
                with self.lock:
                    self.board.set_role(role)
                learnt = True
            nodes = self.ask(self.client.nodes)
            leader = self.ask(self.client.leader)
        except ForsetiError as exc:
            with self.lock:
                if self.board.unreachable(str(exc)) or learnt:
                    self.hub.publish("summary", self.board.summary())
            return
        with self.lock:
            if self.board.set_nodes(nodes, leader, time.time()) or learnt:
                self.hub.publish("summary", self.board.summary())

    def _role(self) -> str:
        """What this key may do, asked of the cluster with requests that change nothing:
        an undrain of a node no node is named, a stop of a key no process has."""
        try:
            self.ask(self.client.undrain, PROBE)
        except AccessDenied:
            pass
        except ForsetiError as exc:
            if isinstance(exc, Timeout):
                raise
            return "admin"  # (unknown-node: allowed, and nothing changed)
        else:
            return "admin"
        try:
            self.ask(self.client.stop, "default", PROBE)
        except AccessDenied:
            return "reader"
        except Timeout:
            raise
        except ForsetiError:
            pass
        return "client"

    # -- the follower: one event stream for every page --

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                stream = self.ask(self.client.events)
            except ForsetiError:
                self._stop.wait(1.0)
                continue
            with stream:
                self._drain(stream)

    def _drain(self, stream) -> None:
        while not self._stop.is_set():
            if self.board.stale:
                self._resync()
            event = stream.next_event(0.5)
            if event is None:
                continue
            with self.lock:
                self.hub.publish("event", self.board.apply(event))
            self._wake.set()  # the nodes' counts changed, or one was lost

    def _resync(self) -> None:
        try:
            locations = self.ask(self.client.processes)
        except ForsetiError:
            return  # (asked again on the next turn)
        with self.lock:
            self.board.set_processes(locations)
            self.hub.publish("summary", self.board.summary())
            self.hub.publish("processes", {"total": len(self.board.processes)})

    # -- what the pages ask --

    def join(self) -> tuple[queue.Queue, dict]:
        """A page's stream, and the overview it starts from (nothing falls between)."""
        with self.lock:
            return self.hub.join(), self.board.overview(time.time())

    def page(self, group: str, key: str, offset: int, limit: int) -> dict:
        with self.lock:
            return self.board.page(group, key, offset, limit)

    def act(self, action: str, fields: dict) -> dict:
        """drain, undrain or stop, as the client does them (the cluster decides who may;
        a refusal has the role asked for again: the key's folder may have changed)."""
        try:
            return self._act(action, fields)
        except AccessDenied:
            with self.lock:
                self.board.set_role("unknown")
                self.hub.publish("summary", self.board.summary())
            self._wake.set()
            raise

    def _act(self, action: str, fields: dict) -> dict:
        if action == "stop":
            found = self.ask(self.client.stop, _text(fields, "group"), _text(fields, "key"))
            return {"found": found}
        node = _text(fields, "node")
        if action == "drain":
            self.ask(self.client.drain, node, stop=bool(fields.get("stop", False)))
        else:
            self.ask(self.client.undrain, node)
        self._wake.set()
        return {"node": node}


def _text(fields: dict, name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"'{name}' must be a non-empty string")
    return value


class BadRequest(ValueError):
    pass


STATUS = {"forbidden": 403, "authentication": 403, "timeout": 504, "unknown-node": 404}


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:  # noqa: A002 (the base class's name)
        pass  # (quiet: the page asks often)

    def do_GET(self) -> None:
        if not self._host_ok():
            return
        url = urlsplit(self.path)
        if url.path in STATIC:
            return self._static(STATIC[url.path])
        if url.path == "/api/stream":
            return self._stream()
        if url.path == "/api/processes":
            query = parse_qs(url.query)
            one = lambda name, default="": query.get(name, [default])[0]  # noqa: E731
            try:
                offset, limit = int(one("offset", "0")), int(one("limit", str(PAGE)))
            except ValueError:
                return self._json(400, {"error": "usage", "message": "offset and limit are numbers"})
            return self._json(200, self.server.dashboard.page(one("group"), one("key"), offset, limit))
        self._json(404, {"error": "not-found", "message": f"no page {url.path}"})

    def do_POST(self) -> None:
        if not self._host_ok():
            return
        action = urlsplit(self.path).path.removeprefix("/api/")
        if action not in ("drain", "undrain", "stop"):
            return self._json(404, {"error": "not-found", "message": f"no action {self.path}"})
        origin = self.headers.get("Origin")
        if origin is not None and origin != f"http://{self.headers.get('Host')}":
            return self._json(403, {"error": "forbidden", "message": f"a request from another site ({origin})"})
        if self.headers.get_content_type() != "application/json":
            return self._json(415, {"error": "usage", "message": "send JSON (Content-Type: application/json)"})
        length = int(self.headers.get("Content-Length") or 0)
        if length > BODY_MAX:
            return self._json(413, {"error": "usage", "message": "too large"})
        try:
            fields = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(fields, dict):
                raise BadRequest("expected a JSON object")
            answer = self.server.dashboard.act(action, fields)
        except (BadRequest, json.JSONDecodeError) as exc:
            return self._json(400, {"error": "usage", "message": str(exc)})
        except ForsetiError as exc:
            return self._json(STATUS.get(exc.kind, 502), {"error": exc.kind, "message": str(exc)})
        self._json(200, {"ok": True, **answer})

    def _host_ok(self) -> bool:
        """Bound to loopback: only a loopback Host (no other site's page, by DNS rebinding)."""
        if not self.server.loopback:
            return True
        host = re.sub(r":\d+$", "", self.headers.get("Host") or "").strip("[]")
        if host in LOOPBACK_NAMES or _loopback(host):
            return True
        self._json(403, {"error": "forbidden", "message": "this dashboard answers loopback names only"})
        return False

    def _static(self, name: str) -> None:
        body = resources.files(__package__).joinpath("static", name).read_bytes()
        self._send(200, TYPES[name.rsplit(".", 1)[1]], body)

    def _json(self, status: int, obj) -> None:
        self._send(status, "application/json", json.dumps(obj).encode())

    def _send(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _stream(self) -> None:
        """Server-sent events: the overview, then each event and change as it comes."""
        dashboard = self.server.dashboard
        q, overview = dashboard.join()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(f"event: overview\ndata: {json.dumps(overview)}\n\n".encode())
            self.wfile.flush()
            while True:
                try:
                    text = q.get(timeout=KEEPALIVE)
                except queue.Empty:
                    text = b": keepalive\n\n"
                if text is None:
                    break
                self.wfile.write(text)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with dashboard.lock:
                dashboard.hub.leave(q)
            self.close_connection = True


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], dashboard: Dashboard) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.dashboard = dashboard
        self.loopback = _loopback(address[0])

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"


def serve(client: Client, listen: str, insecure: bool, ready: Callable[[str], None]) -> None:
    """Serve the dashboard until interrupted; ``ready(url)`` once it listens."""
    host, port = listen_address(listen, insecure)
    dashboard = Dashboard(client)
    try:
        server = Server((host, port), dashboard)
    except OSError as exc:
        raise ListenError(f"--listen {listen}: {exc.strerror or exc}") from None
    try:
        dashboard.start()
        ready(server.url)
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        dashboard.close()

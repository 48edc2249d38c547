"""A small client of etcd's v3 HTTP/JSON gateway (``/v3/...``): what the election needs
and nothing more. Keys and values go as base64, int64s come back as strings.

Why our own: python-etcd3 is unmaintained and breaks on current protobuf; the gRPC
stack would be a heavy dependency for a dozen calls a minute; the gateway ships with
every etcd since 3.4 and speaks plain JSON over ``http.client``. (Patroni wrote its
own client for the same reasons.) It blocks: only ``election.py``'s thread uses it,
never a daemon's loop.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import urllib.parse


class EtcdError(Exception):
    """No endpoint of ``cluster.etcd`` answered, or one answered with an error."""


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text) if text else b""


def _prefix_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with ``prefix`` (etcd's range_end)."""
    end = bytearray(prefix)
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return b"\0"
    end[-1] += 1
    return bytes(end)


class Etcd:
    def __init__(self, endpoints: list[str], timeout: float = 1.0) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoint")
        self.endpoints = [urllib.parse.urlsplit(e) for e in endpoints]
        self.timeout = timeout
        self._current = 0  # the endpoint that answered last: tried first
        self._watch: http.client.HTTPConnection | None = None  # the watch under way

    def _connection(self, url: urllib.parse.SplitResult, timeout: float) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        return cls(url.hostname or "127.0.0.1", url.port, timeout=timeout)

    def post(self, path: str, body: dict) -> dict:
        """One request, to each endpoint in turn until one answers."""
        errors = []
        n = len(self.endpoints)
        for i in range(n):
            index = (self._current + i) % n
            url = self.endpoints[index]
            conn = self._connection(url, self.timeout)
            try:
                conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                errors.append(f"{url.geturl()}: {exc or type(exc).__name__}")
                continue
            finally:
                conn.close()
            try:
                answer = json.loads(data or b"{}")
            except ValueError:
                answer = None
            if not isinstance(answer, dict):
                errors.append(f"{url.geturl()}{path}: HTTP {response.status}, not a JSON object: {data[:200]!r}")
                continue
            if response.status != 200 or "error" in answer or "code" in answer:
                text = f"{url.geturl()}{path}: {answer.get('message') or answer.get('error') or data[:200]!r}"
                if answer.get("code") in _ABOUT_THE_REQUEST:
                    self._current = index
                    raise EtcdError(text)
                errors.append(text)  # a sick member (a learner, no leader, overloaded): the next one
                continue
            self._current = index
            return answer
        raise EtcdError("no etcd endpoint answered: " + "; ".join(errors))

    # -- leases --

    def grant(self, ttl: int) -> int:
        return int(self.post("/v3/lease/grant", {"TTL": ttl})["ID"])

    def keepalive(self, lease: int) -> int:
        """The lease's TTL after renewing it: 0 if it is gone (lapsed or revoked)."""
        answer = self.post("/v3/lease/keepalive", {"ID": str(lease)})
        return int(answer.get("result", {}).get("TTL", 0))

    def revoke(self, lease: int) -> None:
        try:
            self.post("/v3/lease/revoke", {"ID": str(lease)})
        except EtcdError as exc:
            if "not found" not in str(exc):  # lapsed already: as good
                raise

    # -- keys --

    def create(self, key: str, value: str, lease: int) -> tuple[bool, int, str]:
        """Put ``key`` if it does not exist: (whether we did, its create revision, its
        value). The create revision is etcd's: it grows with every new creation."""
        k = _b64(key)
        answer = self.post(
            "/v3/kv/txn",
            {
                "compare": [{"key": k, "target": "CREATE", "create_revision": "0"}],
                "success": [{"request_put": {"key": k, "value": _b64(value), "lease": str(lease)}}],
                "failure": [{"request_range": {"key": k}}],
            },
        )
        if answer.get("succeeded"):
            return True, int(answer["header"]["revision"]), value
        kvs = answer["responses"][0]["response_range"].get("kvs", [])
        if not kvs:  # gone between compare and range: impossible in one txn, but say so
            return False, 0, ""
        return False, int(kvs[0]["create_revision"]), _unb64(kvs[0].get("value", "")).decode(errors="replace")

    def get(self, key: str) -> tuple[str, int, int] | None:
        """(value, create revision, revision of the answer), or None."""
        answer = self.post("/v3/kv/range", {"key": _b64(key)})
        kvs = answer.get("kvs", [])
        if not kvs:
            return None
        kv = kvs[0]
        return _unb64(kv.get("value", "")).decode(errors="replace"), int(kv["create_revision"]), _revision(answer)

    def prefix(self, prefix: str) -> dict[str, bytes]:
        """Every key under ``prefix`` (the prefix cut off) and its value."""
        raw = prefix.encode()
        answer = self.post("/v3/kv/range", {"key": _b64(raw), "range_end": _b64(_prefix_end(raw))})
        return {_unb64(kv["key"])[len(raw) :].decode(): _unb64(kv.get("value", "")) for kv in answer.get("kvs", [])}

    def put_if(self, guard: str, guard_revision: int, key: str, value: bytes | None) -> bool:
        """Put (or, with None, delete) ``key`` only while ``guard`` is the key created at
        ``guard_revision``: a leader writes only while it is the leader."""
        k = _b64(key)
        op = (
            {"request_put": {"key": k, "value": _b64(value)}}
            if value is not None
            else {"request_delete_range": {"key": k}}
        )
        answer = self.post(
            "/v3/kv/txn",
            {
                "compare": [{"key": _b64(guard), "target": "CREATE", "create_revision": str(guard_revision)}],
                "success": [op],
            },
        )
        return bool(answer.get("succeeded"))

    def wait_deleted(self, key: str, after: int, timeout: float) -> bool:
        """Block until ``key`` is deleted after revision ``after`` (True), or ``timeout``
        passes (False). Through a watch: the gateway streams one JSON object a line."""
        url = self.endpoints[self._current]
        conn = self._connection(url, timeout)
        try:
            body = {"create_request": {"key": _b64(key), "start_revision": str(after + 1)}}
            conn.request("POST", "/v3/watch", body=json.dumps(body), headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            while True:
                line = response.readline()
                if not line:
                    return False
                result = json.loads(line).get("result", {})
                if any(e.get("type") == "DELETE" for e in result.get("events", ())):
                    return True
        except TimeoutError:
            return False
        except (OSError, http.client.HTTPException, ValueError) as exc:
            self._current = (self._current + 1) % len(self.endpoints)  # the next try goes elsewhere
            raise EtcdError(f"{url.geturl()}/v3/watch: {exc or type(exc).__name__}") from None
        finally:
            self._watch = None
            conn.close()

    def interrupt(self) -> None:
        watch = self._watch
        if watch is not None and watch.sock is not None:
            try:
                watch.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# gRPC status codes that are about the request itself (not the member that answered):
# INVALID_ARGUMENT, NOT_FOUND (a lease that is gone), FAILED_PRECONDITION.
_ABOUT_THE_REQUEST = (3, 5, 9)


def _revision(answer: dict) -> int:
    return int(answer.get("header", {}).get("revision", 0))

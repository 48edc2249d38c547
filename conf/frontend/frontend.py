"""An asyncio HTTP front-end that finds each user's session process: the shape of
what users build on Forseti. Standard library and forsetictl only.

    python conf/frontend/frontend.py --endpoint tcp://127.0.0.1:7072 --port 8080
    curl http://127.0.0.1:8080/session/alice     # get-or-create alice's session: its location
    curl http://127.0.0.1:8080/find/bob          # where bob's runs, or 404
    curl -X DELETE http://127.0.0.1:8080/session/alice
    curl -d 'hello' http://127.0.0.1:8080/chat/alice   # post to alice's chat session (a call): 1
    curl http://127.0.0.1:8080/chat/alice              # read it back: ["hello"]

Each connection is served by a coroutine of one event loop; all share one AsyncClient,
many requests in flight on one socket, none blocking the loop. With several
``--endpoint``s (or a comma-separated list) the front-end goes on when a node dies.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import msgspec

from forsetictl import AsyncClient, BadRequest, ForsetiError, NotFound, Timeout

GROUP = "sessions"
CHAT = "chat"  # forsetid.examples:chat, talked to with call: "post TEXT" and "read"


async def handle(client: AsyncClient, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:  # (keep-alive: one request after another on the connection)
            request = await reader.readline()
            if not request:
                return
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length" and value.strip().isdigit():
                    length = min(int(value), 1 << 16)
            data = await reader.readexactly(length) if length else b""
            method, path, *_ = request.decode("latin-1").split() + ["", ""]
            status, body = await answer(client, method, path, data)
            data = json.dumps(body).encode()
            head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
            writer.write(head.encode() + data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def answer(client: AsyncClient, method: str, path: str, data: bytes = b"") -> tuple[str, object]:
    _, what, user = (path.split("/", 2) + ["", ""])[:3]
    if not user:
        return "404 Not Found", {"error": "try /session/USER, /find/USER or /chat/USER"}
    try:
        if what == "chat" and method == "POST":  # the user's session, started if need be, keeps the line
            return "200 OK", {"lines": int(await client.call(CHAT, user, b"post " + data))}
        if what == "chat" and method == "GET":
            history = await client.call(CHAT, user, b"read", create=False)
            return "200 OK", {"history": history.decode(errors="replace").split("\n") if history else []}
        if what == "session" and method == "GET":
            return "200 OK", msgspec.to_builtins(await client.get(GROUP, user))
        if what == "session" and method == "DELETE":
            return "200 OK", {"stopped": await client.stop(GROUP, user)}
        if what == "find" and method == "GET":
            loc = await client.find(GROUP, user)
            return ("200 OK", msgspec.to_builtins(loc)) if loc else ("404 Not Found", {"error": "no session"})
    except BadRequest as exc:  # a user name the cluster's rules refuse: told before anything is sent
        return "400 Bad Request", {"error": str(exc)}
    except NotFound:
        return "404 Not Found", {"error": f"no chat for {user}"}
    except Timeout as exc:
        return "503 Service Unavailable", {"error": str(exc)}
    except ForsetiError as exc:
        return "502 Bad Gateway", {"error": str(exc), "kind": exc.kind}
    return "404 Not Found", {"error": f"no {method} {path}"}


async def main(endpoints: list[str], host: str, port: int, ready=None) -> None:
    async with AsyncClient(endpoints, timeout=5.0, cache=True) as client:
        server = await asyncio.start_server(lambda r, w: handle(client, r, w), host, port)
        async with server:
            bound = server.sockets[0].getsockname()[1]
            print(f"listening on http://{host}:{bound}/", flush=True)
            if ready is not None:
                ready(bound)
            await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoint", action="append", default=[], help="a node's client endpoint (repeatable)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080, help="0: any free port")
    args = ap.parse_args()
    try:
        asyncio.run(main(args.endpoint or ["tcp://127.0.0.1:7072"], args.host, args.port))
    except KeyboardInterrupt:
        pass

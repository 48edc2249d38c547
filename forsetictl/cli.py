"""``forsetictl``: the command line (exit status: 0 done, 1 not found, 2 usage or
config error, 3 the cluster answered with an error, 4 no answer in time, 5 access
denied: authentication failed, or the request is outside the key's role)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import msgspec

from .client import AccessDenied, Client, Event, ForsetiError, Timeout
from .config import KEY_ENV, ConfigError, client_keys, resolve
from .security import KeyFileError

OK, NOT_FOUND, USAGE, CLUSTER_ERROR, NO_ANSWER, DENIED = 0, 1, 2, 3, 4, 5


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="forsetictl", description="Talk to a Forseti cluster.")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--config", help="forseti.toml: talk to the node it describes")
    where.add_argument("--endpoint", help="a node's client endpoint, e.g. tcp://127.0.0.1:7072")
    ap.add_argument("--json", action="store_true", help="print JSON objects, one per line")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer (default 5)")
    ap.add_argument(
        "--key",
        metavar="FILE",
        dest="key_file",  # (not "key": the commands' KEY argument)
        help=f"this client's CURVE key pair, a .key_secret file (default ${KEY_ENV}, else the config's security.key)",
    )
    ap.add_argument(
        "--server-key",
        metavar="FILE",
        dest="server_key_file",
        help="the cluster's public key file, server.key (default: the config's security.server_key)",
    )
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("get", help="get-or-create; prints the location")
    p.add_argument("group")
    p.add_argument("key")
    p.add_argument("args", nargs="*", metavar="ARG", help="extra start arguments")
    p = sub.add_parser("find", help="the location, or exit status 1")
    p.add_argument("group")
    p.add_argument("key")
    p = sub.add_parser("stop", help="terminate it; exit status 1 if absent")
    p.add_argument("group")
    p.add_argument("key")
    p = sub.add_parser("ls", help="registered processes")
    p.add_argument("group", nargs="?")
    sub.add_parser("nodes", help="workers: name, state, processes, capacity")
    sub.add_parser("calls", help="groups and how they start")
    p = sub.add_parser("add-call", help="add a group at run time")
    p.add_argument("group")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--entry", metavar="MOD:FUNC")
    how.add_argument("--command", nargs=argparse.REMAINDER, metavar="ARGV", help="the rest of the line")
    p.add_argument("--arg", action="append", default=[], dest="call_args", metavar="A")
    p.add_argument("--ready", action="store_true", help="wait for forsetictl.ready() from the process")
    p.add_argument("--start-timeout", type=float)
    p.add_argument("--stop-timeout", type=float)
    p.add_argument("--process-endpoint", dest="process_endpoint", metavar="TEMPLATE")
    p = sub.add_parser("events", help="follow started/exited events until interrupted")
    p.add_argument("group", nargs="?")
    p.add_argument("--count", type=int, help="stop after this many events")
    p = sub.add_parser("keygen", help="write a CURVE key pair, NAME.key and NAME.key_secret (section 8)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--dir", default=".", help="where to write them (default: the current directory)")
    p = sub.add_parser(
        "bench",
        help="measure lookups, starts and exits against raw baselines",
        description="Starts a throw-away local cluster unless --config/--endpoint names one.",
    )
    p.add_argument("--workers", type=int, default=2, help="workers of the local cluster (default 2)")
    p.add_argument("--transport", choices=["ipc", "tcp"], default="ipc", help="of the local cluster (default ipc)")
    p.add_argument("--count", type=int, default=2000, help="sequential lookups per measurement (default 2000)")
    p.add_argument("--window", type=int, default=64, help="requests in flight when pipelining (default 64)")
    p.add_argument("--seconds", type=float, default=1.0, help="length of each throughput run (default 1)")
    p.add_argument("--forks", type=int, default=500, help="bare forks for the baseline (default 500)")
    p.add_argument("--starts", type=int, default=200, help="new keys per start measurement (default 200)")
    p.add_argument("--concurrency", type=int, default=16, help="concurrent gets of new keys (default 16)")
    p.add_argument("--exits", type=int, default=50, help="processes killed to time exit propagation (default 50)")
    p.add_argument(
        "--curve",
        action="store_true",
        help="what CURVE costs instead: cached find and new entry starts, next to a plain cluster and a raw CURVE echo",
    )
    p.add_argument("--profile", metavar="DIR", help="run the local daemons under cProfile, one .prof per daemon in DIR")
    p.add_argument(
        "--simulate",
        action="store_true",
        help="the leader's decisions at scale, no sockets (python -m forsetid.simulate), instead",
    )
    p.add_argument(
        "--sim-workers",
        type=_counts,
        default=[10, 100, 1000],
        metavar="N,N,..",
        help="simulated worker counts (default 10,100,1000)",
    )
    p.add_argument(
        "--sim-keys",
        type=_counts,
        default=[10_000, 100_000, 1_000_000],
        metavar="N,N,..",
        help="registered keys (default 10000,100000,1000000)",
    )
    p.add_argument("--sim-ops", type=int, default=20_000, help="decisions and lookups timed per size (default 20000)")
    return ap


def _counts(text: str) -> list[int]:
    values = sorted(int(v) for v in text.split(","))
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("expected positive integers separated by commas")
    return values


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = Output(args.json)
    if args.cmd == "keygen":  # no cluster: nothing to resolve or connect to
        return keygen(args, out)
    if args.cmd == "bench":  # it starts its own cluster, or talks to the one named
        from .bench import run as bench

        try:
            return bench(args)
        except KeyboardInterrupt:
            return OK
    try:
        endpoint, config = resolve(args.endpoint, args.config)
        key, key_label = (args.key_file, "--key") if args.key_file else (os.environ.get(KEY_ENV) or None, f"${KEY_ENV}")
        key, server_key = client_keys(config, key, args.server_key_file, key_label, "--server-key")
    except (ConfigError, KeyFileError) as exc:  # file, key and problem are in the message
        return out.error("config", str(exc), USAGE)
    try:
        with Client(endpoint, timeout=args.timeout, key=key, server_key=server_key) as client:
            return COMMANDS[args.cmd](client, args, out)
    except KeyFileError as exc:  # (changed since it was checked)
        return out.error("config", str(exc), USAGE)
    except Timeout as exc:
        return out.error(exc.kind, str(exc), NO_ANSWER)
    except AccessDenied as exc:
        return out.error(exc.kind, str(exc), DENIED)
    except ForsetiError as exc:
        return out.error(exc.kind, str(exc), CLUSTER_ERROR)
    except KeyboardInterrupt:
        return OK
    except BrokenPipeError:
        return OK


# -- the commands: each takes (client, args, out) and returns the exit status ---------


def get(client: Client, args, out: Output) -> int:
    out.location(client.get(args.group, args.key, args.args))
    return OK


def find(client: Client, args, out: Output) -> int:
    loc = client.find(args.group, args.key)
    if loc is None:
        return out.error("not-found", f"no process for {args.group}/{args.key}", NOT_FOUND)
    out.location(loc)
    return OK


def stop(client: Client, args, out: Output) -> int:
    if not client.stop(args.group, args.key):
        return out.error("not-found", f"no process for {args.group}/{args.key}", NOT_FOUND)
    out.line({"stopped": True, "group": args.group, "key": args.key}, f"stopped {args.group}/{args.key}")
    return OK


def ls(client: Client, args, out: Output) -> int:
    out.table(client.processes(args.group), ["group", "key", "node", "pid", "endpoint", "started_at"])
    return OK


def nodes(client: Client, args, out: Output) -> int:
    out.table(client.nodes(), ["name", "state", "processes", "capacity", "suspended"])
    return OK


def calls(client: Client, args, out: Output) -> int:
    items = client.calls()
    suspended = {}  # group -> nodes where its crash-loop guard tripped
    for node in client.nodes():
        for group in node.suspended:
            suspended.setdefault(group, []).append(node.name)
    rows = [{"name": n, **msgspec.to_builtins(c), "suspended_on": suspended.get(n, [])} for n, c in items.items()]
    for row in rows:
        if out.json:
            out.line(row, "")
        else:
            how = row.get("entry") or " ".join(row.get("command", []))
            extra = " ".join(f"{k}={row[k]}" for k in ("args", "ready", "endpoint", "suspended_on") if row.get(k))
            print(f"{row['name']}\t{how}\t{extra}".rstrip())
    return OK


def add_call(client: Client, args, out: Output) -> int:
    options = {
        k: v
        for k, v in (
            ("start_timeout", args.start_timeout),
            ("stop_timeout", args.stop_timeout),
            ("endpoint", args.process_endpoint),
        )
        if v is not None
    }
    if args.command is not None and not args.command:
        return out.error("usage", "--command needs the program and its arguments", USAGE)
    client.add_call(
        args.group, entry=args.entry, command=args.command, args=args.call_args, ready=args.ready, **options
    )
    out.line({"added": args.group}, f"added {args.group}")
    return OK


def events(client: Client, args, out: Output) -> int:
    seen = 0
    with client.events(args.group) as stream:
        print(f"forsetictl: following events from {stream.endpoint} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        for event in stream:
            out.event(event)
            seen += 1
            if args.count is not None and seen >= args.count:
                break
    return OK


def keygen(args, out: Output) -> int:
    from .security import keygen as write_pair

    try:
        public, secret = write_pair(args.name, args.dir)
    except (FileExistsError, KeyFileError) as exc:
        return out.error("usage", str(exc), USAGE)
    except OSError as exc:
        return out.error("usage", f"keygen: {exc.filename or args.dir}: {exc.strerror or exc}", USAGE)
    out.line({"public": public, "secret": secret}, f"public key: {public}\nsecret key: {secret} (mode 0600)")
    return OK


COMMANDS = {"get": get, "find": find, "stop": stop, "ls": ls, "nodes": nodes, "calls": calls,
            "add-call": add_call, "events": events}  # fmt: skip


class Output:
    def __init__(self, as_json: bool) -> None:
        self.json = as_json

    def line(self, obj: dict, text: str) -> None:
        print(json.dumps(obj) if self.json else text, flush=True)

    def location(self, loc) -> None:
        obj = msgspec.to_builtins(loc)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(loc.started_at))
        self.line(
            obj, f"{loc.group}/{loc.key} node={loc.node} pid={loc.pid} endpoint={loc.endpoint or '-'} started={when}"
        )

    def table(self, items: list, columns: list[str]) -> None:
        rows = [msgspec.to_builtins(i) for i in items]
        if self.json:
            for row in rows:
                print(json.dumps(row))
            return
        cells = [[c.upper() for c in columns]] + [[_cell(r.get(c)) for c in columns] for r in rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
        for row in cells:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())

    def event(self, e: Event) -> None:
        obj = {
            f: getattr(e, f)
            for f in ("seq", "kind", "group", "key", "node", "pid", "exit_code", "signal", "reason", "at")
        }
        if e.kind == "missed":
            obj["missed"] = e.missed
            how = f"{e.missed} events" if e.missed else "events (the leader changed)"
            return self.line(obj, f"{e.seq} missed {how}: what you know may be out of date")
        text = f"{e.seq} {e.kind} {e.group}/{e.key} node={e.node} pid={e.pid}"
        if e.kind == "exited":
            text += f" reason={e.reason}" + (f" signal={e.signal}" if e.signal else f" code={e.exit_code}")
        self.line(obj, text)

    def error(self, kind: str, message: str, status: int) -> int:
        if self.json:
            print(json.dumps({"error": kind, "message": message}), flush=True)
        print(f"forsetictl: {message}", file=sys.stderr)
        return status


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    if isinstance(value, float):
        return time.strftime("%H:%M:%S", time.localtime(value))
    return str(value)


if __name__ == "__main__":
    sys.exit(main())

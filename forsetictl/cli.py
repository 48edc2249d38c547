"""``forsetictl``: the command line (exit status: 0 done, 1 not found, 2 usage or
config error, 3 the cluster answered with an error, 4 no answer in time, 5 access
denied: authentication failed, or the request is outside the key's role)."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shlex
import sys
import time

import msgspec

from forsetid.const import GROUP_MAX, GROUP_PATTERN, GROUP_RULE, SCALE_KEYS, SCALE_WORKERS

from .client import AccessDenied, BadEndpoint, Client, Event, ForsetiError, NotFound, Timeout, Unreachable
from .completion import SHELLS, commands, script
from .config import ENDPOINT_ENV, KEY_ENV, LOCAL_CONFIG, ConfigError, client_keys, from_env, resolve
from .security import KeyFileError
from .terminal import KEY_WIDTH, display_width, shown

OK, NOT_FOUND, USAGE, CLUSTER_ERROR, NO_ANSWER, DENIED = 0, 1, 2, 3, 4, 5


EPILOG = """\
The options above (--config, --endpoint, --json, --wide, --timeout, --key, --server-key) may
also come after the command (forsetictl ls --json, forsetictl get g k --timeout 2), with
the same meaning; one given both before and after the command: the later one wins.
add-call's --command takes the words after it up to the next add-call option (spelt
out); the words after -- are the command's whatever they look like (see add-call --help).

With neither --config nor --endpoint: $FORSETI_ENDPOINT, then ./forseti.toml, then
tcp://127.0.0.1:7072.

Exit status: 0 done; 1 not found; 2 usage or config error; 3 the cluster answered with
an error; 4 no answer in time; 5 access denied."""


class _Parser(argparse.ArgumentParser):
    """Usage mistakes exit 2 (argparse's way), with the JSON error too when --json is on the line."""

    json_errors = False

    def error(self, message: str):
        if self.json_errors:
            print(json.dumps({"error": "usage", "message": f"{self.prog}: {message}"}), flush=True)
        super().error(shown(message))  # (it may quote what was typed: a key, say)


def parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="forsetictl",
        description="Talk to a Forseti cluster.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--version", action="version", version=f"forsetictl {version()}", help="print the version")
    _global_options(ap, ap.add_mutually_exclusive_group(), defaults=True)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND", help="one of:")
    for name, (text, options, more) in SUBCOMMANDS.items():
        command = sub.add_parser(name, help=text, **more)
        options(command)
        title = "options that may also come before the command (given twice: the later one wins)"
        _global_options(command, command.add_argument_group(title), defaults=False)
    return ap


def _no_options(p: argparse.ArgumentParser) -> None:
    pass


def _get_options(p: argparse.ArgumentParser) -> None:
    _group_key(p)
    p.add_argument("args", nargs="*", metavar="ARG", help="extra start arguments (after --, one that starts with '-')")


def _talk_options(p: argparse.ArgumentParser) -> None:
    _group_key(p)
    p.add_argument("data", metavar="DATA", help="the payload; - reads it from stdin")
    p.add_argument("--no-create", dest="create", action="store_false", help="exit status 1 if it does not run")


def _group_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("group", nargs="?", type=_group, metavar="GROUP", help="only this group's (default: all)")


def _remove_call_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("group", type=_group, metavar="GROUP", help="the group to remove")


def _node_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("node", metavar="NODE", help="a worker's name (see nodes)")


def _drain_options(p: argparse.ArgumentParser) -> None:
    _node_options(p)
    p.add_argument("--stop", action="store_true", help="also stop its processes (each within its stop_timeout)")


def _events_options(p: argparse.ArgumentParser) -> None:
    _group_options(p)
    p.add_argument("--count", type=_positive, metavar="N", help="stop after this many events")


def _dashboard_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--listen",
        default="127.0.0.1:8470",
        metavar="HOST:PORT",
        help="where to serve the page (default 127.0.0.1:8470; port 0: any free one)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow a HOST that is not loopback (whoever reaches it acts with this key)",
    )


def _keygen_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="the pair's name, e.g. a node's or a user's")
    p.add_argument("--dir", default=".", help="where to write them (default: the current directory)")


def _completion_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("shell", choices=SHELLS, help="the shell the script is for")


def _add_call_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("group", type=_group, metavar="GROUP", help="the new group's name")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--entry", metavar="MOD:FUNC", help="a Python function to run in a forked process")
    how.add_argument(
        "--command",
        action="append",
        metavar="PROGRAM [ARG...]",
        help="a program and its arguments: the words after it, up to the next add-call option ({key}, {group}, "
        "{node} are filled in); or give them after --",
    )
    p.add_argument(
        "--arg", action="append", default=[], dest="call_args", metavar="A", help="a start argument (repeatable)"
    )
    p.add_argument("--ready", action="store_true", help="wait for forsetictl.ready() from the process")
    p.add_argument(
        "--start-timeout", type=_seconds, metavar="S", help="seconds a start may take (default 10; with --ready)"
    )
    p.add_argument(
        "--stop-timeout", type=_seconds_or_0, metavar="S", help="seconds from SIGTERM to SIGKILL on stop (default 5)"
    )
    p.add_argument(
        "--process-endpoint",
        dest="process_endpoint",
        metavar="TEMPLATE",
        help="the endpoint a location reports, e.g. ipc:///run/app/{key}.sock",
    )
    p.add_argument(
        "--log", metavar="TEMPLATE", help="a file per key for the process's output, e.g. /var/log/app/{key}.log"
    )
    p.add_argument(
        "--restart",
        choices=["never", "on-failure", "always"],
        help="start a key's process again when it exits: on-failure (an abnormal exit, its node gone) or always "
        "(any exit but a stop); default never",
    )
    p.add_argument(
        "--mailbox", type=int, metavar="N", help="requests a process may hold unanswered (default 1000; 0: no calls)"
    )
    p.add_argument("--replace", action="store_true", help="replace the group if it exists (else: exit status 3)")


def _bench_options(p: argparse.ArgumentParser) -> None:
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
        "--losses",
        type=int,
        default=10,
        help="worker daemons SIGKILLed (and a fifth as many SIGSTOPped, the heartbeat baseline) to time failure "
        "detection, own cluster only (default 10)",
    )
    p.add_argument(
        "--curve",
        action="store_true",
        help="what CURVE costs instead: cached find and new entry starts, next to a plain cluster and a raw CURVE echo",
    )
    p.add_argument(
        "--failover",
        action="store_true",
        help="backend etcd instead: from SIGKILL and SIGTERM of the leader to the first get of a new key, "
        "and cached find and starts against backend memory (its own etcd and clusters)",
    )
    p.add_argument(
        "--rounds", type=_positive, default=5, help="with --failover: leaders killed per signal and setting (default 5)"
    )
    p.add_argument(
        "--candidates", type=_positive, default=3, help="with --failover: leader candidates of its clusters (default 3)"
    )
    p.add_argument(
        "--logs",
        metavar="DIR",
        help="with --failover: the daemons log at INFO; their logs and etcd's are copied to DIR",
    )
    p.add_argument(
        "--saturation",
        action="store_true",
        help="one leader's capacity instead: misses and starts per second until its throughput stops growing, and "
        "its CPU per miss and per start (a leader of its own, stand-in workers in this process)",
    )
    _sizes(
        p, "sat", "with --saturation: stand-in worker counts", "with --saturation: registered keys, at the most workers"
    )
    p.add_argument("--profile", metavar="DIR", help="run the local daemons under cProfile, one .prof per daemon in DIR")
    _simulate_options(p)


def _sizes(p: argparse.ArgumentParser, prefix: str, workers: str, keys: str) -> None:
    """--PREFIX-workers and --PREFIX-keys: the sizes a scale measurement runs at."""
    for what, default, text in (("workers", SCALE_WORKERS, workers), ("keys", SCALE_KEYS, keys)):
        text += f" (default {','.join(str(n) for n in default)})"
        p.add_argument(f"--{prefix}-{what}", type=_counts, default=list(default), metavar="N,N,..", help=text)


def _simulate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--simulate",
        action="store_true",
        help="the leader's decisions at scale, no sockets (python -m forsetid.simulate), instead",
    )
    _sizes(p, "sim", "simulated worker counts", "registered keys")
    p.add_argument("--sim-ops", type=int, default=20_000, help="decisions and lookups timed per size (default 20000)")


def _global_options(ap: argparse.ArgumentParser, where, defaults: bool) -> None:
    """--config, --endpoint, --json, --wide, --timeout, --key, --server-key: on the main parser
    with their defaults; on a command's without (argparse.SUPPRESS), so that one given
    after the command overrides the same one given before it, and one not given there
    leaves it be. An option a command has already (its own --key, say) is skipped."""

    def add(*names, default=None, **kwargs):
        if any(name in ap._option_string_actions for name in names):
            return
        target = where if not defaults or names[0] in ("--config", "--endpoint") else ap
        target.add_argument(*names, default=default if defaults else argparse.SUPPRESS, **kwargs)

    add("--config", metavar="FILE", help="forseti.toml: talk to the node it describes")
    add(
        "--endpoint",
        metavar="URL",
        action=_Endpoints,
        help="a node's client endpoint, e.g. tcp://127.0.0.1:7072; several: repeated or comma-separated",
    )
    add("--json", action="store_true", default=False, help="print JSON objects, one per line, every value whole")
    add(
        "--wide",
        action="store_true",
        default=False,
        help=f"print keys whole (default: one wider than {KEY_WIDTH} columns is cut, ending in …), escaped still",
    )
    add("--timeout", type=_seconds, default=5.0, metavar="S", help="seconds to wait for an answer (default 5)")
    add(
        "--key",
        metavar="FILE",
        dest="key_file",  # (not "key": the commands' KEY argument)
        help=f"this client's CURVE key pair, a .key_secret file (default ${KEY_ENV} outside processes Forseti "
        "started, else the config's security.key)",
    )
    add(
        "--server-key",
        metavar="FILE",
        dest="server_key_file",
        help="the cluster's public key file, server.key (default: the config's security.server_key)",
    )


class _Endpoints(argparse.Action):
    """--endpoint given again adds to the ones before it (comma-separated, as the client reads them)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        before = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, f"{before},{values}" if before else values)


def _group_key(p: argparse.ArgumentParser) -> None:
    p.add_argument("group", type=_group, metavar="GROUP", help="the group (forseti.toml's [calls.GROUP])")
    p.add_argument("key", type=_key, metavar="KEY", help="the key: one process per (group, key)")


def _group(text: str) -> str:
    if not (0 < len(text) <= GROUP_MAX and re.fullmatch(GROUP_PATTERN, text)):
        raise argparse.ArgumentTypeError(f"'{text}': {GROUP_RULE}")
    return text


def _key(text: str) -> str:
    if not 0 < len(text) <= 1024:
        raise argparse.ArgumentTypeError("a key is 1 to 1024 characters")
    return text


def _seconds(text: str, zero: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not (0 <= value if zero else 0 < value) or not value <= 86400:
        low = "from 0" if zero else "above 0"
        raise argparse.ArgumentTypeError(f"expected seconds {low} and at most 86400, got {text!r}")
    return value


def _seconds_or_0(text: str) -> float:
    return _seconds(text, zero=True)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def version() -> str:
    """This installation's version: the distribution's, else forsetid's, else "unknown"."""
    from importlib import metadata

    try:
        return metadata.version("forseti")
    except metadata.PackageNotFoundError:
        pass
    # (forsetid, the package, is loaded already, with forsetid.const: read, not imported)
    return str(getattr(sys.modules.get("forsetid"), "__version__", None) or "unknown")


def _counts(text: str) -> list[int]:
    values = sorted(int(v) for v in text.split(","))
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("expected positive integers separated by commas")
    return values


ADD_CALL = """\
Add a group at run time. Its command is the words after --command, up to the next
add-call option (--replace, --arg A, --restart P, --json, ... spelt out), or everything
after --, whatever it looks like; both together: the words after -- come last.

  forsetictl add-call temp --command sleep 3601 --replace
  forsetictl add-call temp --replace -- sleep 3601
  forsetictl add-call lister --command ls -- -l --json     (argv: ls -l --json)"""

COMPLETION = """\
Print a completion script for bash or zsh: commands, options, their choices, file
names, and GROUP and NODE from the cluster the line names (a half-second timeout).

  source <(forsetictl completion bash)     # in ~/.bashrc
  source <(forsetictl completion zsh)      # in ~/.zshrc (it uses zsh's bashcompinit)"""

# name: (help, its options, more for add_parser)
SUBCOMMANDS = {
    "get": ("get-or-create; prints the location", _get_options, {}),
    "find": ("the location, or exit status 1", _group_key, {}),
    "call": ("deliver DATA to its process (get-or-create first) and print the reply", _talk_options, {}),
    "send": ("deliver DATA to its process (get-or-create first), one way", _talk_options, {}),
    "stop": ("terminate it (SIGTERM, then SIGKILL); exit status 1 if absent", _group_key, {}),
    "ls": ("registered processes", _group_options, {}),
    "nodes": ("workers: name, state, processes, capacity", _no_options, {}),
    "calls": ("groups and how they start", _no_options, {}),
    "leader": ("who leads, and each candidate's state (leader, standby, unreachable)", _no_options, {}),
    "add-call": (
        "add a group at run time",
        _add_call_options,
        {
            "description": ADD_CALL,
            "formatter_class": argparse.RawDescriptionHelpFormatter,
            "usage": "%(prog)s GROUP (--entry MOD:FUNC | --command PROGRAM [ARG...] | -- PROGRAM [ARG...]) [options]",
        },
    ),
    "remove-call": (
        "remove a group (its running processes go on until they exit; new gets fail)",
        _remove_call_options,
        {},
    ),
    "drain": ("the node takes no new process (state draining); lookups through it go on", _drain_options, {}),
    "undrain": ("the node takes new processes again", _node_options, {}),
    "events": ("follow started/exited events until interrupted", _events_options, {}),
    "dashboard": ("serve a live web page on the cluster (nodes, leader, processes, events)", _dashboard_options, {}),
    "keygen": ("write a CURVE key pair, NAME.key and NAME.key_secret", _keygen_options, {}),
    "completion": (
        "print the shell's completion script: source <(forsetictl completion bash)",
        _completion_options,
        {"description": COMPLETION, "formatter_class": argparse.RawDescriptionHelpFormatter},
    ),
    "bench": (
        "measure lookups, starts and exits against raw baselines",
        _bench_options,
        {"description": "Starts a throw-away local cluster unless --config/--endpoint names one."},
    ),
}


def _command_words(ap: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``argv`` with add-call's command as argparse takes it: each word after --command
    (up to the next add-call option, spelt out) or after -- as ``--command=WORD``, so
    that a word may start with '-' and the options after the command are still read."""
    at = _first_positional(ap, argv)
    if at is None or argv[at] != "add-call":
        return argv
    options = commands(ap)["add-call"]
    known = {name: a for name, a in options._option_string_actions.items() if name not in ("-h", "--help")}
    out, words, given, taking, i = argv[: at + 1], [], False, False, at + 1
    while i < len(argv):
        word, name = argv[i], argv[i].split("=", 1)[0]
        i += 1
        if word == "--":
            words += argv[i:]
            given = True
            break
        if name == "--command":
            given = taking = True
            words += word.split("=", 1)[1:]
        elif taking and name not in known:
            words.append(word)
        else:
            taking = False
            if name in known and known[name].nargs != 0 and "=" not in word and i < len(argv):
                word = f"{word}={argv[i]}"  # its value, whatever it looks like
                i += 1
            out.append(word)
    if given and not words:
        options.error("--command (or --) needs the program and its arguments")
    return out + [f"--command={word}" for word in words]


def _first_positional(ap: argparse.ArgumentParser, argv: list[str]) -> int | None:
    """Where the command is in ``argv`` (past the main parser's options and their values)."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            return None
        if not word.startswith("-") or word == "-":
            return i
        action = ap._option_string_actions.get(word)
        i += 2 if action is not None and action.nargs != 0 else 1
    return None


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a terminal that cannot show "…" or a key's letters: escaped
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    ap = parser()
    argv = sys.argv[1:] if argv is None else argv
    _Parser.json_errors = "--json" in argv
    args = ap.parse_args(_command_words(ap, argv))
    if args.config is not None and args.endpoint is not None:
        ap.error("--config and --endpoint: one or the other")
    out = Output(args.json, args.wide)
    if args.cmd == "keygen":  # no cluster: nothing to resolve or connect to
        return keygen(args, out)
    if args.cmd == "completion":
        print(script(ap, args.shell), end="")
        return OK
    if args.cmd == "bench":  # it starts its own cluster, or talks to the one named
        from .bench import run as bench

        try:
            return bench(args)
        except KeyboardInterrupt:
            return OK
    try:
        endpoint, config = resolve(args.endpoint, args.config)
        key, key_label = (args.key_file, "--key") if args.key_file else (_key_from_env(), f"${KEY_ENV}")
        key, server_key = client_keys(config, key, args.server_key_file, key_label, "--server-key")
    except (ConfigError, KeyFileError) as exc:  # file, key and problem are in the message
        return out.error("config", str(exc), USAGE)
    client = None
    try:
        with Client(endpoint, timeout=args.timeout, key=key, server_key=server_key) as client:
            return COMMANDS[args.cmd](client, args, out)
    except KeyFileError as exc:  # (changed since it was checked)
        return out.error("config", str(exc), USAGE)
    except BadEndpoint as exc:
        return out.error("usage", str(exc), USAGE)
    except Unreachable as exc:
        message = str(exc)
        if message.startswith(f"nothing listens at {endpoint} "):
            message = f"nothing listens at {endpoint} ({_origin(args)}): is forsetid running there?"
        return out.error(exc.kind, message, NO_ANSWER)
    except Timeout as exc:
        message = str(exc)
        if client is not None and client.requests == 1 and message.startswith(f"no answer from {endpoint} "):
            # Nothing ever answered: say where the endpoint came from, the likeliest mistake.
            message = (
                f"no answer from {endpoint} ({_origin(args)}) within {args.timeout:g} s: is forsetid running there?"
            )
        return out.error(exc.kind, message, NO_ANSWER)
    except AccessDenied as exc:
        return out.error(exc.kind, str(exc), DENIED)
    except ForsetiError as exc:
        return out.error(exc.kind, str(exc), CLUSTER_ERROR)
    except KeyboardInterrupt:
        return OK
    except BrokenPipeError:
        return OK


def _origin(args) -> str:
    """Where the endpoint came from, in the order of config.resolve."""
    if args.endpoint:
        return "from --endpoint"
    if args.config:
        return f"the node of --config {args.config}"
    if from_env(ENDPOINT_ENV):
        return f"from ${ENDPOINT_ENV}"
    if os.path.exists(LOCAL_CONFIG):
        return f"the node of ./{LOCAL_CONFIG}"
    return "the default endpoint"


def _key_from_env() -> str | None:
    return from_env(KEY_ENV)


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


def call(client: Client, args, out: Output) -> int:
    return _talk(client, args, out, one_way=False)


def send(client: Client, args, out: Output) -> int:
    return _talk(client, args, out, one_way=True)


def _talk(client: Client, args, out: Output, one_way: bool) -> int:
    data = sys.stdin.buffer.read() if args.data == "-" else os.fsencode(args.data)
    try:
        if one_way:
            client.send(args.group, args.key, data, create=args.create)
            if out.json:
                out.line({"sent": True, "group": args.group, "key": args.key}, "")
            return OK
        reply = client.call(args.group, args.key, data, create=args.create)
    except NotFound:
        return out.error("not-found", f"no process for {args.group}/{args.key}", NOT_FOUND)
    if out.json:
        out.line({"reply": reply.decode(errors="replace")}, "")
    else:
        sys.stdout.buffer.write(reply + (b"" if reply.endswith(b"\n") else b"\n"))
    return OK


def stop(client: Client, args, out: Output) -> int:
    if not client.stop(args.group, args.key):
        return out.error("not-found", f"no process for {args.group}/{args.key}", NOT_FOUND)
    out.line({"stopped": True, "group": args.group, "key": args.key}, f"stopped {args.group}/{out.key(args.key)}")
    return OK


LOCATION = ["group", "key", "node", "pid", "endpoint", "started_at"]


def ls(client: Client, args, out: Output) -> int:
    out.table([msgspec.to_builtins(loc) for loc in client.processes(args.group)], LOCATION, cut=("key", "endpoint"))
    return OK


def nodes(client: Client, args, out: Output) -> int:
    out.table([msgspec.to_builtins(n) for n in client.nodes()], ["name", "state", "processes", "capacity", "suspended"])
    return OK


def leader(client: Client, args, out: Output) -> int:
    about = client.leader()
    if out.json:
        out.line(about, "")
    else:
        epoch = f" (epoch {about['epoch']})" if about["epoch"] is not None else ""
        print(f"leader: {shown(about['leader'] or 'none')}{epoch}", flush=True)
        out.table(about["candidates"], ["name", "state"])
    return OK if about["leader"] else NOT_FOUND


def calls(client: Client, args, out: Output) -> int:
    items = client.calls()
    suspended: dict[str, list[str]] = {}  # group -> nodes where its crash-loop guard tripped
    for node in client.nodes():
        for group in node.suspended:
            suspended.setdefault(group, []).append(node.name)
    # Every field, those at their defaults too (the wire form omits them).
    rows = [
        {"name": n, **msgspec.to_builtins(msgspec.structs.asdict(c)), "suspended_on": suspended.get(n, [])}
        for n, c in items.items()
    ]
    if out.json:
        for row in rows:
            out.line(row, "")
        return OK
    for row in rows:
        row["ready"] = "yes" if row["ready"] else "no"
        row["args"] = json.dumps(row["args"]) if row["args"] else None
        row["how"] = f"entry {row['entry']}" if row["entry"] is not None else f"command {shlex.join(row['command'])}"
    columns = [
        "name",
        "ready",
        "start_timeout",
        "stop_timeout",
        "restart",
        "endpoint",
        "log",
        "suspended_on",
        "args",
        "how",
    ]
    out.table(rows, columns)
    return OK


def add_call(client: Client, args, out: Output) -> int:
    options = {
        k: v
        for k, v in (
            ("start_timeout", args.start_timeout),
            ("stop_timeout", args.stop_timeout),
            ("endpoint", args.process_endpoint),
            ("log", args.log),
            ("restart", args.restart),
            ("mailbox", args.mailbox),
        )
        if v is not None
    }
    try:
        client.add_call(
            args.group,
            entry=args.entry,
            command=args.command,
            args=args.call_args,
            ready=args.ready,
            replace=args.replace,
            **options,
        )
    except ForsetiError as exc:
        if exc.kind != "bad-call":
            raise
        return out.error(exc.kind, str(exc), USAGE)  # refused here: the request never left
    out.line({"added": args.group, "replace": args.replace}, f"added {args.group}")
    return OK


def drain(client: Client, args, out: Output) -> int:
    client.drain(args.node, stop=args.stop)
    what = " and stopping its processes" if args.stop else ""
    out.line({"draining": args.node, "stop": args.stop}, f"draining {shown(args.node)}{what}")
    return OK


def undrain(client: Client, args, out: Output) -> int:
    client.undrain(args.node)
    out.line({"undrained": args.node}, f"{shown(args.node)} takes new processes again")
    return OK


def remove_call(client: Client, args, out: Output) -> int:
    client.remove_call(args.group)
    out.line({"removed": args.group}, f"removed {args.group} (its running processes go on until they exit)")
    return OK


def events(client: Client, args, out: Output) -> int:
    """Follow the events; when nothing (no event, no tick) has come for the stream's
    silence (heartbeat x liveness), say so once on stderr, and again when they flow."""
    silence = client.info().silence
    seen = 0
    with client.events(args.group) as stream:
        note(f"following events from {stream.endpoint} (Ctrl-C to stop)")
        quiet = False
        while args.count is None or seen < args.count:
            event = stream.next_event(silence / 4)  # (ticks do not end the wait: look at `heard` often)
            silent = time.monotonic() - stream.heard > silence
            if silent and not quiet:
                note(f"no events or ticks from {stream.endpoint} for {silence:g} s: is the leader up?")
            elif quiet and not silent:
                note("events are flowing again")
            quiet = silent
            if event is not None:
                out.event(event)
                seen += 1
    return OK


def dashboard(client: Client, args, out: Output) -> int:
    """Serve the page until interrupted (forsetictl/dashboard/)."""
    from .dashboard import ListenError, serve

    def ready(url: str) -> None:
        out.line({"dashboard": url}, f"dashboard at {url} (Ctrl-C to stop)")

    try:
        serve(client, args.listen, args.insecure, ready)
    except ListenError as exc:
        return out.error("usage", str(exc), USAGE)
    return OK


def note(text: str) -> None:
    print(f"forsetictl: {shown(text)}", file=sys.stderr, flush=True)


def keygen(args, out: Output) -> int:
    from .security import keygen as write_pair

    try:
        public, secret = write_pair(args.name, args.dir)
    except (FileExistsError, KeyFileError) as exc:
        return out.error("usage", str(exc), USAGE)
    except OSError as exc:
        return out.error("usage", f"keygen: {exc.filename or args.dir}: {exc.strerror or exc}", USAGE)
    text = f"public key: {shown(public)}\nsecret key: {shown(secret)} (mode 0600)"
    out.line({"public": public, "secret": secret}, text)
    return OK


COMMANDS = {"get": get, "find": find, "call": call, "send": send, "stop": stop, "ls": ls, "nodes": nodes,
            "calls": calls, "add-call": add_call, "remove-call": remove_call, "drain": drain, "undrain": undrain,
            "events": events, "leader": leader, "dashboard": dashboard}  # fmt: skip

EVENT = ["seq", "kind", "group", "key", "node", "pid", "exit_code", "signal", "reason", "at"]
TIMES = {"started_at", "at"}  # Unix times: shown as local dates and times


def when(t: float) -> str:
    """The one date format of the plain output: ISO 8601, local time, seconds."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


class Output:
    """Plain text for people (no None: "-"; every string through terminal.shown, a key
    cut at KEY_WIDTH columns unless --wide, in lines and tables; in a table, an endpoint
    made from a key too), or JSON objects, one per line, complete."""

    def __init__(self, as_json: bool, wide: bool = False) -> None:
        self.json = as_json
        self.width = None if wide else KEY_WIDTH

    def line(self, obj: dict, text: str) -> None:
        print(json.dumps(obj) if self.json else text, flush=True)

    def key(self, key: str) -> str:
        """A key as plain output shows it: escaped, and cut unless --wide."""
        return shown(key, self.width)

    def location(self, loc) -> None:
        obj = msgspec.to_builtins(loc)
        where = f"node={shown(loc.node)} pid={loc.pid} endpoint={shown(_cell(loc.endpoint))}"
        self.line(obj, f"{loc.group}/{self.key(loc.key)} {where} started={when(loc.started_at)}")

    def table(self, rows: list[dict], columns: list[str], cut: tuple[str, ...] = ()) -> None:
        """Aligned columns, every cell escaped; those of the columns ``cut`` (a key, or
        made from one) cut at KEY_WIDTH unless --wide."""
        if self.json:
            for row in rows:
                print(json.dumps(row))
            return
        widths = [self.width if c in cut else None for c in columns]
        cells = [[c.upper() for c in columns]] + [
            [shown(_cell(r.get(c), c in TIMES), w) for c, w in zip(columns, widths, strict=True)] for r in rows
        ]
        _print_aligned(cells)

    def event(self, e: Event) -> None:
        obj = {f: getattr(e, f) for f in EVENT}
        if e.kind == "missed":
            obj["missed"] = e.missed
            how = f"{e.missed} events were missed" if e.missed else "the leader changed"
            return self.line(obj, f"{when(e.at)} {e.seq} {how}: what you know may be out of date")
        if e.adopted:  # it ran already (a new leader learnt of it): not a new start
            obj["adopted"] = True
        kind = "running" if e.adopted else e.kind
        text = f"{when(e.at)} {e.seq} {kind} {e.group}/{self.key(e.key)} node={shown(e.node)} pid={e.pid}"
        if e.kind == "exited":
            text += f" reason={shown(_cell(e.reason))}"
            if e.signal is not None:
                text += f" signal={e.signal}"
            elif e.exit_code is not None:
                text += f" code={e.exit_code}"
        self.line(obj, text)

    def error(self, kind: str, message: str, status: int) -> int:
        if self.json:
            print(json.dumps({"error": kind, "message": message}), flush=True)
        print(f"forsetictl: {shown(message)}", file=sys.stderr, flush=True)  # whole, escaped
        return status


def _print_aligned(cells: list[list[str]]) -> None:
    """Rows of shown cells, each column as wide as its widest cell (in terminal columns)."""
    widths = [max(display_width(row[i]) for row in cells) for i in range(len(cells[0]))]
    for row in cells:
        print("  ".join(v + " " * (w - display_width(v)) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(value, is_time: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    if is_time:
        return when(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())

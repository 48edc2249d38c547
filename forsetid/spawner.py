"""Starting, signalling and reaping a worker's processes through a fork server.

The fork server (the "zygote", ``python -m forsetid.spawner``) is a small interpreter of
its own: it imports the modules of the configured ``entry`` groups once; then each
``entry`` process is one ``fork()`` of it that calls its function, with no fresh
interpreter to pay for, and each ``command`` process is a fork that execs. It is not a
fork of the daemon because a fork costs in proportion to what the forking process has
mapped: the daemon's ZeroMQ and everything else would make every start slower. The
zygote is the parent of every process: it reaps them on SIGCHLD and reports each exit
at once.

An ``entry`` start is faster still from a *spare*: an entry process forked ahead of
need, set up and waiting for its key on a socket that the daemon holds. The daemon
hands the key straight to it (no fork, no fork server on the way) and asks for the
next spare once that start is registered (``refill()``).

Daemon <-> zygote: lists over a SOCK_SEQPACKET socketpair, in ``marshal`` (both ends
are the same interpreter; the zygote imports nothing it can do without, as every page it
maps makes each of its forks dearer: msgspec alone cost 20% more per fork).

* ``["spawn", token, entry, command, args, env, key, log]`` with one fd attached, the write
  end of the process's *ready pipe* -> ``["spawned", token, pid]`` or
  ``["failed", token, reason]``; ``env`` holds ``FORSETI_READY_FD`` (any value) when the
  process itself signals readiness
* ``["spare"]`` -> ``["spare", pid]`` with the spare's socket attached (none if the fork
  failed); the daemon sends it the ``spawn`` message it would send the zygote, with the
  ready pipe's write end, or with none when the entry is one the zygote resolved at
  start and the process need not signal readiness itself: such a spare runs that
  function's code already, so it counts as started the moment it has its key
* ``["preloaded", entries, failures, path]``, the zygote's first word: the entries it
  resolved, ``[entry, error]`` for each it could not, and the ``sys.path`` it searched
* ``["signal", pid, signum]`` (to the process's whole process group)
* ``["exited", pid, returncode]`` (negative: killed by that signal), spares included
* ``["lease", until]`` (``cluster.partition = "stop"``): the processes may live until
  ``until`` (``lease_clock()``, the same clock in the daemon and the fork server) and no
  longer. When it passes without a later one, the fork server SIGKILLs every process
  group it started, spares included, tells ``["lapsed", None, pids]`` (before their exits),
  and refuses starts and spares until a lease ends in the future again. A fork server
  started with a lease (``Spawner(lease=True)``) holds none until the first: it starts
  nothing before the daemon has heard from a leader. The daemon's own loop may be
  frozen or dead: the fork server keeps this time by itself

The ready pipe tells the daemon that a process has started. A child writes one line:
``R <endpoint>`` once started (an ``entry`` child after importing its function, or the
process itself through ``forsetictl.ready()`` when its group has ``ready = true``), or
``E <reason>`` when it cannot start. The env variable ``FORSETI_READY_FD`` names the fd.
"""

from __future__ import annotations

import _signal
import collections
import ctypes
import gc
import importlib
import marshal
import os
import signal
import socket
import sys
import time

from .const import NOT_READY, READY, READY_FD_ENV, SPARE_NAME, ready_line

_MAX = 1 << 20
_pack, _unpack = marshal.dumps, marshal.loads
MAX_JOB = 64 << 10  # bytes of one start's arguments and environment: well within a socket's message
_PR_SET_PDEATHSIG, _PR_SET_NAME = 1, 15
# Held blocked, with their default action, by the fork server (a stop aimed at it, or a
# pipe closed under it, must not end it) and released by each child: one sent to a child
# before that instant is delivered then. Python's own choice for the last two, to ignore
# them, would survive an exec.
_HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE, signal.SIGXFSZ)
# A child sets its signals through the C core of `signal` (`_signal`), with plain ints: the
# Python wrappers' enum conversions touch, and so copy, some 50 shared pages (~150 us here).
_CHILD_SIGCHLD, _CHILD_DEFAULT, _CHILD_HELD = int(signal.SIGCHLD), int(signal.SIG_DFL), [int(s) for s in _HELD_SIGNALS]
_libc = None


def _prctl(option: int, arg) -> None:
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(option, arg, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the zygote still kills on EOF
        pass


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux)."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def lease_clock() -> float:
    """The clock of the lease (``["lease", until]``): CLOCK_BOOTTIME where there is one,
    which, unlike CLOCK_MONOTONIC, goes on while the machine is suspended (a machine
    that wakes from a suspend longer than its lease kills its processes at once)."""
    return time.clock_gettime(_LEASE_CLOCK)


_LEASE_CLOCK = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


def _ready_pipe() -> tuple[int, int]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    return r, w


class Spawner:
    """The daemon's handle on its zygote."""

    def __init__(self, entries: list[str], python_path: list[str] | None = None, lease: bool = False) -> None:
        """``lease``: the processes live only as long as the leases the daemon gives
        (``lease()``; ``cluster.partition = "stop"``)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        fd = theirs.fileno()
        # The daemon's own sys.path, ahead of the current directory that -c would put
        # first: the fork server must import this forsetid and the entry modules the
        # daemon would, whatever directory it was started from.
        path = [*(python_path or ()), *sys.path]  # node.python_path first: the operator's word
        boot = f"import sys; sys.path[:0] = {path!r}; from forsetid.spawner import main; main(sys.argv)"
        argv = [sys.executable, "-c", boot, str(fd), str(os.getpid()), "lease" if lease else "-", *entries]
        import subprocess  # here, not at the top: imported in the zygote, it slows every fork

        # A session of its own: a signal to the daemon's process group (a terminal's
        # hang-up) must not take the fork server down with the daemon before it has
        # killed its processes' groups.
        self.proc = subprocess.Popen(argv, pass_fds=[fd], start_new_session=True)
        theirs.close()
        ours.setblocking(False)
        self.pid = self.proc.pid
        self.sock = ours
        self.outbox: collections.deque = collections.deque()  # what did not fit in the socket yet
        self.spares: dict[int, socket.socket] = {}  # pid -> the socket it waits on
        self.asked = False  # for a spare, not yet come
        self.preloaded: set[str] = set()  # entries every spare has resolved already
        self.owed = False  # a spare was taken and not yet replaced
        if entries:
            self._want_spare()

    def fileno(self) -> int:
        return self.sock.fileno()

    def spawn(
        self, token: int, entry, command, args: list, env: dict, key: str, log: str | None = None
    ) -> tuple[int | None, int | None]:
        """Start a process: returns the read end of its ready pipe, and its pid when a
        spare took the key (otherwise a ``spawned`` report tells it). A pid with no pipe:
        the spare had resolved the entry already, so the process has started. ValueError:
        the start is too large to be sent (it has not begun)."""
        job = _pack(["spawn", token, entry, command, args, env, key, log])  # for a spare or the zygote
        if len(job) > MAX_JOB:
            raise ValueError(
                f"its arguments and environment take {len(job):,} bytes; a start takes at most {MAX_JOB:,}"
            )
        if command is None:
            # Started once a spare has the key; with a log file, once that file is open.
            started = entry in self.preloaded and READY_FD_ENV not in env and log is None
            r, w = (None, None) if started else _ready_pipe()
            pid = self._use_spare(job, w)
            if pid is not None:
                return r, pid
            if started:
                r, w = _ready_pipe()  # the fork server's child tells when it has its function
        else:
            r, w = _ready_pipe()
        self._send(job, w)
        return r, None

    def _use_spare(self, job: bytes, ready_w: int | None) -> int | None:
        while self.spares:
            pid, sock = self.spares.popitem()
            try:
                socket.send_fds(sock, [job], [] if ready_w is None else [ready_w])
            except OSError:  # it died waiting (its exit report is on the way)
                continue
            finally:
                sock.close()
            if ready_w is not None:
                os.close(ready_w)  # the process holds the only write end: EOF = it is gone
            self.owed = True  # replaced on refill()
            return pid
        self._want_spare()  # spares are asked for on demand: one that died is not replaced in a loop
        return None

    def refill(self) -> None:
        """Replace the spare a start took. The daemon calls this once that start is
        registered, not at once: on one machine, the fork would take the CPU from the
        answer to the caller of that very start."""
        if self.owed:
            self.owed = False
            self._want_spare()

    def _want_spare(self) -> None:
        if not self.spares and not self.asked:
            self.asked = True
            self._send(_pack(["spare"]))

    def signal(self, pid: int, signum: int) -> None:
        self._send(_pack(["signal", pid, int(signum)]))  # (marshal takes no IntEnum)

    def lease(self, until: float) -> None:
        """The processes may live until ``until`` (``lease_clock()``), unless renewed."""
        self._send(_pack(["lease", until]))

    def _send(self, msg: bytes, fd: int | None = None) -> None:
        """Send now, or queue behind what waits already: a burst of starts or a shutdown
        of hundreds must neither block the daemon nor be lost."""
        self.outbox.append((msg, fd))
        self.flush()

    def flush(self) -> None:
        while self.outbox:
            msg, fd = self.outbox[0]
            try:
                if fd is None:
                    self.sock.send(msg)
                else:
                    socket.send_fds(self.sock, [msg], [fd])
            except BlockingIOError:
                return  # the daemon calls flush again on its next turn
            except OSError:  # the fork server is gone: receive() says so
                self._drop_outbox()
                return
            self.outbox.popleft()
            if fd is not None:
                os.close(fd)  # the child holds the only write end: EOF = it is gone

    def receive(self) -> list[list]:
        """Every report about a process that the zygote has sent so far."""
        reports = []
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, _MAX, 1)
            except BlockingIOError:
                return reports
            if not data:
                raise RuntimeError("the fork server died")
            report = _unpack(data)
            if report[0] == "preloaded":
                self.preloaded = set(report[1])
                reports += [["unimportable", entry, [error, report[3]]] for entry, error in report[2]]
            elif report[0] == "spare":  # (without a socket when the fork failed)
                self.asked = False
                if fds:
                    self.spares[report[1]] = socket.socket(fileno=fds[0])
            elif report[0] == "exited" and report[1] in self.spares:
                self.spares.pop(report[1]).close()
            else:
                reports.append(report)

    def _drop_outbox(self) -> None:
        for _, fd in self.outbox:
            if fd is not None:
                os.close(fd)
        self.outbox.clear()

    def close(self) -> None:
        """Close the channel: the zygote SIGKILLs whatever is left and exits."""
        self._drop_outbox()
        for sock in self.spares.values():
            sock.close()
        self.spares.clear()
        self.sock.close()
        self.proc.wait()


class _Zygote:
    # No PDEATHSIG here: when the daemon dies, the zygote must live on for a moment to
    # kill its processes' whole process groups (their own children included), which it
    # does on EOF from the daemon's socket.

    def __init__(self, sock: socket.socket, daemon_pid: int, lease: bool = False) -> None:
        self.sock = sock
        self.children: set[int] = set()
        self.execs: dict[int, tuple[int, int]] = {}  # a command child's exec pipe -> (token, pid), until it execs
        # With a lease: until when the processes may live (lease_clock); none held yet.
        self.until: float | None = float("-inf") if lease else None
        self.lapsed = lease  # the last lease has ended (and what it covered was killed)
        if os.getppid() != daemon_pid:  # the daemon is gone already
            os._exit(1)

    def serve(self, entries: list[str]) -> None:
        # Only the daemon's socket closing ends the fork server (then it kills every group).
        # Held before the entry modules are imported: a thread one of them starts inherits
        # the mask, and the fork server must not die of a signal that thread takes.
        signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
        for sig in _HELD_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        self.resolved = []  # (a failed import is not retried in every spare: only on a start)
        failures = []
        for entry in entries:
            try:
                _resolve(entry)
                self.resolved.append(entry)
            except BaseException as exc:  # reported again, per process, when one starts
                failures.append([entry, f"{type(exc).__name__}: {exc}"])
        self.send(["preloaded", self.resolved, failures, [p for p in sys.path if p]])
        _use_titles("forseti: fork server")
        # What is imported now is shared with every child: keep the collector off it, or
        # its first pass in a child would touch (and so copy) every page of it.
        gc.collect()
        gc.freeze()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.own_fds = (wake_r, wake_w)
        with open("/proc/self/comm", "rb") as f:
            self.name = f.read().strip()  # what a spare is called again once it has its key
        import select

        while True:
            readable, _, _ = select.select([self.sock, wake_r, *self.execs], [], [], self.lease_left())
            if self.until is not None and not self.lapsed and lease_clock() >= self.until:
                self.lapse()
            for fd in readable:
                if fd in self.execs:
                    self.exec_done(fd)
            if wake_r in readable:
                while True:
                    try:
                        if not os.read(wake_r, 4096):
                            break
                    except BlockingIOError:
                        break
                self.reap()
            if self.sock in readable:
                try:
                    data, fds, _, _ = socket.recv_fds(self.sock, _MAX, 1)
                except ConnectionError:
                    data, fds = b"", []
                if not data:  # the daemon is gone: nothing may outlive it
                    for pid in self.children:
                        self.kill(pid, signal.SIGKILL)
                    self.bury()
                    return
                self.handle(_unpack(data), fds, (wake_r, wake_w))

    def lease_left(self) -> float | None:
        """Seconds until the lease ends (None: no lease to keep, or it has ended)."""
        if self.until is None or self.lapsed:
            return None
        return max(0.0, self.until - lease_clock())

    def lapse(self) -> None:
        """The lease ended unrenewed: the leader may place these keys elsewhere soon, so
        every process group goes now (the daemon's loop may be frozen: this is the fork
        server's own clock). The daemon is told first, so that it reports the exits
        that follow with reason "partition"."""
        self.lapsed = True
        self.send(["lapsed", None, sorted(self.children)])
        for pid in self.children:
            self.kill(pid, signal.SIGKILL)

    def renew(self, until: float) -> None:
        self.until = until
        if until > lease_clock():
            self.lapsed = False
        elif not self.lapsed:  # (a renewal that came too late ends it all the same)
            self.lapse()

    def fork_spare(self) -> None:
        """Fork an ``entry`` process ahead of need, and hand its socket to the daemon."""
        if self.lapsed:  # (killed at the lapse; none until a lease holds again)
            self.send(["spare", None])
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        zygote, name = os.getpid(), self.name
        _prctl(_PR_SET_NAME, SPARE_NAME)  # so that the spare bears the name from its first instant
        try:
            pid = os.fork()
        except OSError:
            pid = -1
        if pid != 0:
            _prctl(_PR_SET_NAME, name)
        if pid < 0:
            ours.close(), theirs.close()
            self.send(["spare", None])
            return
        if pid == 0:
            try:
                self.sock.close()
                ours.close()
                for fd in (*self.own_fds, *self.execs):
                    os.close(fd)
                _setup(zygote)
                _rehearse(self.resolved)
                try:
                    data, fds, _, _ = socket.recv_fds(theirs, _MAX, 1)
                except OSError:
                    data = b""
                if not data:  # the daemon is gone or done with us
                    os._exit(0)
                theirs.close()
                _, _, entry, _, args, env, key, log = _unpack(data)
                os.environ.update(env)
                ready_w = fds[0] if fds else None
                if _output_to(log, ready_w):
                    _run_entry(entry, args, env, key, ready_w)
            finally:
                os._exit(1)
        theirs.close()
        self.children.add(pid)
        try:
            socket.send_fds(self.sock, [_pack(["spare", pid])], [ours.fileno()])
        except OSError:
            pass  # the daemon is gone; the next recv says so
        ours.close()  # the daemon holds it now: when it closes, the spare exits

    def handle(self, msg: list, fds: list[int], own_fds) -> None:
        if msg[0] == "spare":
            self.fork_spare()
            return
        if msg[0] == "signal":
            _, pid, signum = msg
            if pid in self.children:
                self.kill(pid, signum)
            return
        if msg[0] == "lease":
            self.renew(msg[1])
            return
        _, token, entry, command, args, env, key, log = msg
        ready_w = fds[0]
        if self.lapsed:
            os.close(ready_w)
            self.send(["failed", token, "this node's lease has lapsed: it has not heard from its leader in time"])
            return
        err_r, err_w = os.pipe()  # close-on-exec: EOF means the exec worked
        zygote = os.getpid()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(ready_w), os.close(err_r), os.close(err_w)
            self.send(["failed", token, f"fork failed: {exc.strerror}"])
            return
        if pid == 0:
            self.sock.close()
            for fd in (*own_fds, err_r, *self.execs):
                os.close(fd)
            _child(entry, command, args, env, key, log, ready_w, err_w, zygote)
        os.close(ready_w)
        os.close(err_w)
        self.children.add(pid)
        if command is None:  # an entry child reports its own failures on its ready pipe
            os.close(err_r)
            self.send(["spawned", token, pid])
        else:  # told once the exec is done (EOF) or has failed (why): meanwhile, the next start
            self.execs[err_r] = (token, pid)

    def exec_done(self, err_r: int) -> None:
        """A command child has exec'd (EOF on its close-on-exec pipe) or said why it
        could not (one write, then its exit): ``spawned`` or ``failed``."""
        token, pid = self.execs.pop(err_r)
        try:
            error = os.read(err_r, 65536)
        except OSError:
            error = b""
        os.close(err_r)
        if error:
            self.send(["failed", token, error.decode(errors="replace")])
        else:
            self.send(["spawned", token, pid])

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            for err_r, (_, child) in list(self.execs.items()):
                if child == pid:  # its start is told before its exit
                    self.exec_done(err_r)
            self.send(["exited", pid, os.waitstatus_to_exitcode(status)])

    def bury(self, seconds: float = 2.0) -> None:
        """Reap the children just killed (for a while: one stuck in the kernel may not
        die), rather than leave zombies to an init that may not reap them."""
        deadline = time.monotonic() + seconds
        while self.children and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                time.sleep(0.005)
            else:
                self.children.discard(pid)

    def kill(self, pid: int, signum: int) -> None:
        try:
            os.killpg(pid, signum)  # the child leads its own session
        except OSError:
            try:
                os.kill(pid, signum)
            except OSError:
                pass

    def send(self, msg: list) -> None:
        try:
            self.sock.send(_pack(msg))
        except OSError:
            pass  # the daemon is gone; the next recv says so


def _setup(zygote: int) -> None:
    """What every new process does first: its own session, death with the zygote,
    default signal handling."""
    os.setsid()
    die_with_parent()
    if os.getppid() != zygote:  # it died before prctl took effect
        os._exit(1)
    signal.set_wakeup_fd(-1)
    _signal.signal(_CHILD_SIGCHLD, _CHILD_DEFAULT)
    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, _CHILD_HELD)


def _rehearse(entries: list[str]) -> None:
    """Walk a spare through what it does once it has its key, while it waits: in a new
    process the first write to a page is a copy-on-write fault, and those faults, not
    the work, were most of a spare's start (0.5 ms here)."""
    env = {name: "" for name in ("FORSETI_GROUP", "FORSETI_KEY", "FORSETI_NODE", "FORSETI_ENDPOINT", READY_FD_ENV)}
    _unpack(_pack(["spawn", 0, "module:function", None, [], env, "key", None]))
    os.environ.update(env)
    for name in env:
        del os.environ[name]
    for entry in entries:  # (resolved by the zygote already: this only touches the pages)
        _resolve(entry)
    _title(SPARE_NAME.decode())  # in ps too; and its pages are touched for the real title


def _use_titles(title: str) -> None:
    """Give processes titles that ``ps`` shows (``forseti: GROUP/KEY``): written over the
    fork server's own command line, which is long (its boot code) and which every child
    shares until it writes its own. setproctitle did the same, but once loaded it made
    every fork of the fork server 15-40% dearer (measured); this costs a child one
    write to a page of its own."""
    global _title, _argv
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (fields 48, 49)
    except (OSError, ValueError, IndexError):
        return  # not Linux: /proc/PID/comm, where there is one, still says what it is
    _argv = (start, end - start)
    _title = _write_title
    _title(title)


_argv: tuple[int, int] | None = None  # where this process's command line lies, and its room


def _write_title(title: str) -> None:
    _prctl(_PR_SET_NAME, title.encode()[:15])
    if _argv is None:
        return
    start, room = _argv
    data = title.encode()[: room - 1]
    ctypes.memmove(start, data, len(data))
    ctypes.memset(start + len(data), 0, room - len(data))


def _title(title: str) -> None:  # replaced by _write_title once the fork server has found its command line
    _prctl(_PR_SET_NAME, title.encode()[:15])


def _child(entry, command, args, env, key, log, ready_w: int, err_w: int, zygote: int) -> None:
    """In a new process: never returns."""
    try:
        _setup(zygote)
        os.environ.update(env)
        if command is None:
            os.close(err_w)  # the zygote goes on; an import error travels on the ready pipe
            if _output_to(log, ready_w):
                _run_entry(entry, args, env, key, ready_w)
            os._exit(1)
        try:
            _redirect(log)
        except OSError as exc:
            os.write(err_w, f"cannot open its log file {log}: {exc.strerror or exc}".encode())
            os._exit(1)
        # Only a process that signals readiness itself keeps the ready pipe.
        os.set_inheritable(ready_w, READY_FD_ENV in env)
        if READY_FD_ENV in env:
            os.environ[READY_FD_ENV] = str(ready_w)
        argv = [*command, *(str(a) for a in args)]
        try:
            path = _which(argv[0])
            if path is not None:
                try:
                    os.execv(path, argv)
                except (OSError, ValueError):
                    pass  # execvp's own search says why
            os.execvp(argv[0], argv)
        except (OSError, ValueError) as exc:
            os.write(err_w, f"cannot run {argv[0]!r}: {getattr(exc, 'strerror', None) or exc}".encode())
            os._exit(127)
    finally:
        os._exit(1)


def _which(name: str) -> str | None:
    """The file that ``execvp`` would run for ``name``: the first on PATH that this
    process may execute (None: none). execvp finds it by trying ``execve`` in every
    folder before it, each try converting the whole environment and raising in Python:
    that was half of a command's start here (1.2 of 2.3 ms: 9 folders before /usr/bin)."""
    if os.sep in name:
        return name
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(folder or os.curdir, name)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    return None


def _redirect(log: str | None) -> None:
    """Send this process's output to ``log`` (appended; folders made), not the daemon's."""
    if log is None:
        return
    folder = os.path.dirname(log)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _output_to(log: str | None, ready_w: int | None) -> bool:
    """``_redirect`` for an entry process: False (and the start fails) if it cannot."""
    try:
        _redirect(log)
    except OSError as exc:
        _tell(ready_w, NOT_READY, f"cannot open its log file {log}: {exc.strerror or exc}")
        return False
    return True


def _run_entry(entry: str, args: list, env: dict, key: str, ready_w: int | None) -> None:
    """Call the entry function in this process (set up already): never returns. No
    ready pipe: the daemon counts the process as started already."""
    code = 1
    try:
        _title(f"forseti: {env.get('FORSETI_GROUP', '?')}/{key}")
        try:
            fn = _resolve(entry)
        except BaseException as exc:
            _tell(ready_w, NOT_READY, f"cannot load entry {entry!r}: {type(exc).__name__}: {exc}")
            os._exit(1)
        if READY_FD_ENV in env:
            os.environ[READY_FD_ENV] = str(ready_w)
        elif ready_w is not None:
            _tell(ready_w, READY)
        try:
            fn(key, *args)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            import traceback  # (not in the fork server: it would make every fork dearer)

            # One block in the daemon's log, saying whose traceback it is.
            who = f"{env.get('FORSETI_GROUP', '?')}/{key} (pid {os.getpid()})"
            sys.stderr.write(f"forsetid: {who} raised:\n{traceback.format_exc()}")
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _resolve(entry: str):
    module, _, attr = entry.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{entry} is not callable")
    return obj


def _tell(fd: int | None, tag: str, text: str = "") -> None:
    if fd is None:  # no one listens: the log has it
        print(f"forsetid: {tag} {text}", file=sys.stderr)
        return
    try:
        os.write(fd, ready_line(tag, text))
        os.close(fd)
    except OSError:
        pass


def main(argv: list[str]) -> None:
    """The zygote's own entry point: ``python -m forsetid.spawner FD DAEMON_PID LEASE ENTRY...``
    (LEASE: ``lease`` to hold the processes to the daemon's leases, ``-`` not)."""
    sock = socket.socket(fileno=int(argv[1]))
    _Zygote(sock, int(argv[2]), argv[3] == "lease").serve(argv[4:])


if __name__ == "__main__":
    main(sys.argv)

"""What the machine itself costs, measured in the same run: a raw pyzmq round trip
against an echo server, and a bare fork in a fresh interpreter."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time

import zmq

from .report import BenchError
from .timing import PHASE_SECONDS, clock

# The raw echo server: a ROUTER that sends back what it receives; it ends by itself.
# With a third argument, the path of a .key_secret file, it is a CURVE server with that
# key (and no ZAP handler: libzmq lets every client key in).
ECHO = """
import sys, time, zmq, zmq.auth
ctx = zmq.Context()
s = ctx.socket(zmq.ROUTER)
s.setsockopt(zmq.LINGER, 0)
s.setsockopt(zmq.RCVTIMEO, 200)
if len(sys.argv) > 3:
    s.curve_publickey, s.curve_secretkey = zmq.auth.load_certificate(sys.argv[3])
    s.curve_server = True
s.bind(sys.argv[1])
print(s.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        s.send_multipart(s.recv_multipart())
    except zmq.Again:
        pass
"""


class EchoServer:
    """The raw echo server in a process of its own; ``curve_key``: the path of the
    server's .key_secret file, to make it a CURVE server."""

    def __init__(self, transport: str, lifetime: float, curve_key: str | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="forseti-echo-")
        bind = "tcp://127.0.0.1:*" if transport == "tcp" else f"ipc://{self.dir}/echo"
        cmd = [sys.executable, "-c", ECHO, bind, str(lifetime), *([curve_key] if curve_key else [])]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, start_new_session=True)
        self.endpoint = self.proc.stdout.readline().decode().strip()
        if not self.endpoint:
            self.close()
            raise BenchError("the echo server did not start")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def raw_round_trips(
    sock: zmq.Socket, frame: bytes, count: int, timeout: float, deadline: float | None = None
) -> list[float]:
    samples = []
    deadline = time.monotonic() + PHASE_SECONDS if deadline is None else deadline
    for _ in range(count):
        t = clock()
        sock.send(frame)
        if not sock.poll(int(timeout * 1000)):
            raise BenchError("no echo within the timeout")
        sock.recv()
        samples.append(clock() - t)
        if time.monotonic() > deadline:
            break
    return samples


# The bare fork baseline runs in a fresh interpreter that imports nothing more: the
# cheapest fork this machine offers (a process that imported zmq forks at twice the cost).
FORKS = """
import os, sys, time
out = []
end = time.monotonic() + float(sys.argv[2])
for _ in range(int(sys.argv[1])):
    t = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    out.append(time.perf_counter() - t)
    if time.monotonic() > end:
        break
print(" ".join(map(repr, out)))
"""


def bare_forks(count: int) -> list[float]:
    try:
        done = subprocess.run(
            [sys.executable, "-c", FORKS, str(count), str(PHASE_SECONDS)],
            capture_output=True,
            timeout=PHASE_SECONDS * 2,
            check=True,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        raise BenchError(f"the fork baseline failed: {exc}") from None
    return [float(x) for x in done.stdout.split()]

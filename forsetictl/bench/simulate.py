"""``forsetictl bench --simulate``: runs ``python -m forsetid.simulate`` (the leader's
decisions at scale, without sockets) and shows its rows as a table or as JSON."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile

from .report import BenchError, Progress

COLUMNS = [  # (key in a row, title, format)
    ("workers", "workers", "{:,}"),
    ("keys", "keys", "{:,}"),
    ("bytes_per_process", "B/process", "{:,.0f}"),
    ("get_new_us", "get new key us", "{:.2f}"),
    ("choose_us", "choose+update us", "{:.2f}"),
    ("scan_us", "old scan us", "{:.2f}"),
    ("find_us", "find us", "{:.2f}"),
    ("fill_s", "fill s", "{:.1f}"),
]


def simulate(args) -> int:
    # forsetid.simulate runs every worker count at the fewest keys, then every key count
    # at the most workers: one row each.
    sizes = len(args.sim_workers) + len(args.sim_keys) - 1
    progress = Progress(not args.json, phases=sizes)
    try:
        rows = _run(args, progress, sizes)
    except BenchError as exc:
        progress.done()
        print(f"forsetictl: bench: {exc}", file=sys.stderr)
        return 3
    progress.done()
    if args.json:
        print(json.dumps({"simulation": rows}))
        return 0
    print("  ".join(f"{title:>16}" for _, title, _ in COLUMNS))
    for row in rows:
        print("  ".join(f"{fmt.format(row[k]):>16}" for k, _, fmt in COLUMNS))
    return 0


def _run(args, progress: Progress, sizes: int) -> list[dict]:
    cmd = [
        sys.executable,
        "-m",
        "forsetid.simulate",
        "--workers",
        ",".join(map(str, args.sim_workers)),
        "--keys",
        ",".join(map(str, args.sim_keys)),
        "--ops",
        str(args.sim_ops),
    ]
    rows = []
    with tempfile.TemporaryFile() as errors:
        # A session of its own, so that its forked children go with it if we stop early.
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, start_new_session=True)
        try:
            progress(f"simulating: size 1 of {sizes}")
            for line in proc.stdout:
                rows.append(json.loads(line))
                if len(rows) < sizes:
                    progress(f"simulating: size {len(rows) + 1} of {sizes}")
            status = proc.wait()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            proc.stdout.close()
        if status != 0:
            errors.seek(0)
            text = errors.read().decode(errors="replace").strip().splitlines()
            raise BenchError(f"the simulation failed (status {status}): {text[-1] if text else 'no message'}")
    return rows

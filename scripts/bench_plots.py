"""The benchmark page's figures, drawn as SVG from the JSON that ``forsetictl --json bench`` prints
(standard library only: no plotting dependency for three charts).

    python scripts/bench_plots.py --run   # run the benches (a few minutes), keep their JSON in docs/bench/
    python scripts/bench_plots.py         # draw docs/bench/*.svg from that JSON

Figures: latency.svg (median and p99 of each latency, next to its baseline), starts.svg (starts per
second and a start's median against the number of gets in flight), failover.svg (each failover of
the leader, from the signal to the first get of a new key answered, against etcd's lease lapse)."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from html import escape
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "docs" / "bench"
CONCURRENCY = (1, 4, 16, 64)
COLORS = {"median": "#1f77b4", "p99": "#d62728", "base": "#888888", "entry": "#1f77b4", "command": "#ff7f0e"}
FONT = 'font-family="sans-serif" font-size="12"'

# The latencies drawn, by the name of their result in the JSON (its median and p99 rows).
LATENCIES = [
    "cached find (Client, sequential)",
    "miss: find via worker -> leader",
    "cached find (AsyncClient, sequential)",
    "call, key on the caller's node",
    "call, key on another node",
    "new entry: get, sequential",
    "new command: get, sequential",
    "exit -> event at a subscriber",
    "exit -> find is None on another node",
    "process SIGKILL -> gone at a waiting caller",
    "worker SIGKILL -> find is None on another node",
]


def run() -> None:
    """Every bench the figures need, one after the other, each JSON kept as printed."""
    OUT.mkdir(parents=True, exist_ok=True)
    quick = ["--count", "500", "--exits", "10", "--losses", "3", "--seconds", "0.5"]
    jobs = {"default.json": ["bench"], "failover.json": ["bench", "--failover", "--rounds", "3"]}
    jobs.update({f"concurrency-{n}.json": ["bench", "--concurrency", str(n), *quick] for n in CONCURRENCY})
    for name, argv in jobs.items():
        print(f"forsetictl --json {' '.join(argv)} > docs/bench/{name}", file=sys.stderr)
        out = subprocess.run(["forsetictl", "--json", *argv], capture_output=True, text=True, check=True).stdout
        json.loads(out)  # (one object, or the run failed)
        (OUT / name).write_text(out)


def load(name: str) -> dict:
    return json.loads((OUT / name).read_text())


def results(data: dict) -> dict[str, dict]:
    return {r["name"]: r for r in data["results"]}


class Svg:
    """A chart's canvas: a plot area at (left, top) of (width, height), in pixels."""

    def __init__(self, width: int, height: int, left: int, top: int, right: int = 20, bottom: int = 40) -> None:
        self.w, self.h, self.left, self.top = width, height, left, top
        self.pw, self.ph = width - left - right, height - top - bottom
        self.parts: list[str] = [f'<rect width="{width}" height="{height}" fill="#fff"/>']

    def text(self, x: float, y: float, s: str, anchor: str = "start", extra: str = "") -> None:
        self.parts.append(f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" {extra}>{escape(s)}</text>')

    def line(self, x1: float, y1: float, x2: float, y2: float, color: str = "#ccc", width: float = 1) -> None:
        self.parts.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{color}" stroke-width="{width}"/>'
        )

    def dot(self, x: float, y: float, color: str, r: float = 4) -> None:
        self.parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{color}"/>')

    def legend(self, items: list[tuple[str, str]], x: float, y: float) -> None:
        for i, (label, color) in enumerate(items):
            self.dot(x + i * 150, y - 4, color)
            self.text(x + i * 150 + 10, y, label)

    def write(self, name: str, title: str, into: Path = OUT) -> None:
        body = "\n  ".join(self.parts)
        svg = (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h}" '
            f'viewBox="0 0 {self.w} {self.h}" {FONT}>\n  <title>{escape(title)}</title>\n  {body}\n</svg>\n'
        )
        (into / name).write_text(svg)


def log_ticks(low: float, high: float) -> list[float]:
    return [10.0**e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)]


def nice(v: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least ``v``: a round top for an axis."""
    power = 10.0 ** math.floor(math.log10(v))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= v)


def duration(us: float) -> str:
    if us >= 1e6:
        return f"{us / 1e6:g} s"
    return f"{us / 1e3:g} ms" if us >= 1e3 else f"{us:g} us"


def latency(data: dict, into: Path = OUT) -> None:
    """One row per latency: a line from its median to its p99 (log scale), and its baseline's median."""
    rows = results(data)
    names = [n for n in LATENCIES if f"{n} median" in rows]
    values = [rows[f"{n} {w}"]["value"] for n in names for w in ("median", "p99")]
    values += [rows[f"{n} median"]["baseline_value"] for n in names]
    ticks = log_ticks(min(values), max(values))
    svg = Svg(960, 60 + 28 * len(names) + 50, left=350, top=50)
    lo, hi = math.log10(ticks[0]), math.log10(ticks[-1])

    def x(v: float) -> float:
        return svg.left + (math.log10(v) - lo) / (hi - lo) * svg.pw

    for t in ticks:
        svg.line(x(t), svg.top - 10, x(t), svg.top + 28 * len(names))
        svg.text(x(t), svg.top + 28 * len(names) + 16, duration(t), "middle")
    for i, n in enumerate(names):
        y = svg.top + 28 * i + 10
        med, p99 = rows[f"{n} median"], rows[f"{n} p99"]
        svg.text(svg.left - 10, y + 4, n, "end")
        svg.line(x(med["value"]), y, x(p99["value"]), y, COLORS["median"], 2)
        svg.dot(x(med["baseline_value"]), y, COLORS["base"], 3)
        svg.dot(x(med["value"]), y, COLORS["median"])
        svg.dot(x(p99["value"]), y, COLORS["p99"])
    svg.legend([("median", COLORS["median"]), ("p99", COLORS["p99"]), ("baseline's median", COLORS["base"])], 350, 24)
    svg.write("latency.svg", "Latencies of one default run: median to p99, log scale, next to each baseline", into)


def starts(into: Path = OUT) -> None:
    """Starts per second (left) and a get's median (right) against gets in flight, entry and command."""
    runs = {n: results(load(f"concurrency-{n}.json")) for n in CONCURRENCY if (OUT / f"concurrency-{n}.json").exists()}
    if not runs:
        return
    svg = Svg(900, 340, left=70, top=50, bottom=50)
    half = (svg.pw - 80) / 2
    xs = {n: i for i, n in enumerate(runs)}
    for panel, (title, metric, unit_scale) in enumerate(
        [
            ("starts per second", "starts/s, {} concurrent", 1),
            ("a get's median, ms", "get, {} concurrent median", 1e-3),
        ]
    ):
        x0 = svg.left + panel * (half + 80)
        points = {
            kind: [
                (n, rows[f"new {kind}: {metric.format(n)}"]["value"] * unit_scale)
                for n, rows in runs.items()
                if f"new {kind}: {metric.format(n)}" in rows
            ]
            for kind in ("entry", "command")
        }
        top = nice(max(v for pts in points.values() for _, v in pts) * 1.1)

        def px(n: int, x0: float = x0) -> float:
            return x0 + (xs[n] + 0.5) / len(xs) * half

        def py(v: float, top: float = top) -> float:
            return svg.top + svg.ph - v / top * svg.ph

        svg.text(x0 + half / 2, svg.top - 14, title, "middle", 'font-weight="bold"')
        for k in range(5):
            v = top * k / 4
            svg.line(x0, py(v), x0 + half, py(v))
            svg.text(x0 - 6, py(v) + 4, f"{v:,.0f}", "end")
        for n in xs:
            svg.text(px(n), svg.top + svg.ph + 16, str(n), "middle")
        svg.text(x0 + half / 2, svg.top + svg.ph + 34, "gets of new keys in flight", "middle")
        for kind, pts in points.items():
            for (n1, v1), (n2, v2) in zip(pts, pts[1:], strict=False):
                svg.line(px(n1), py(v1), px(n2), py(v2), COLORS[kind], 2)
            for n, v in pts:
                svg.dot(px(n), py(v), COLORS[kind])
    svg.legend([("entry (fork of the fork server)", COLORS["entry"])], 70, 16)
    svg.legend([("command (fork + exec)", COLORS["command"])], 330, 16)
    svg.write("starts.svg", "Starts per second and a get's median against the gets of new keys in flight", into)


def failover(data: dict, into: Path = OUT) -> None:
    """Each round of ``bench --failover`` as a dot on a time line from the signal, per signal and setting,
    with the etcd lease lapses (the TTL and the sweep) the SIGKILL rounds wait for."""
    samples = {k: v["values"] for k, v in data.get("samples", {}).items()}
    if not samples:
        return
    rows = list(samples)
    top = max(max(v) for v in samples.values()) * 1.1
    svg = Svg(960, 70 + 34 * len(rows) + 40, left=350, top=50)

    def x(s: float) -> float:
        return svg.left + s / top * svg.pw

    step = 0.5 if top > 1.5 else 0.25
    for k in range(int(top / step) + 1):
        svg.line(x(k * step), svg.top - 10, x(k * step), svg.top + 34 * len(rows))
        svg.text(x(k * step), svg.top + 34 * len(rows) + 16, f"{k * step:g} s", "middle")
    for i, name in enumerate(rows):
        y = svg.top + 34 * i + 10
        lapse = name.startswith("etcd lease lapse")
        svg.text(svg.left - 10, y + 4, name.replace("failover after ", ""), "end")
        for v in samples[name]:
            svg.dot(x(v), y, COLORS["base"] if lapse else COLORS["p99" if "SIGKILL" in name else "median"], 4)
    svg.text(svg.left, svg.top + 34 * len(rows) + 34, "seconds from the signal to the first get of a new key answered")
    svg.legend(
        [("SIGKILL", COLORS["p99"]), ("SIGTERM", COLORS["median"]), ("etcd lease lapse", COLORS["base"])], 330, 24
    )
    svg.write("failover.svg", "Failovers of the leader: each round, from the signal to the first get answered", into)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="store_true", help="run the benches first (minutes), keeping their JSON")
    args = ap.parse_args(argv)
    if args.run:
        run()
    draw(OUT)
    return 0


def draw(into: Path) -> None:
    """The three figures, from the JSON in docs/bench/, into ``into``."""
    latency(load("default.json"), into)
    starts(into)
    failover(load("failover.json"), into)


if __name__ == "__main__":
    sys.exit(main())

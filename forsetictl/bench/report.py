"""The bench's figures: samples into median and p99, results next to their baselines,
the table and the JSON; and the one-line progress display."""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass, field


class BenchError(Exception):
    pass


def stats(samples: list[float]) -> dict:
    """Median and p99 in microseconds."""
    if not samples:
        raise BenchError("no samples: the phase ended before its first measurement")
    s = sorted(samples)
    return {"median": statistics.median(s) * 1e6, "p99": s[min(len(s) - 1, int(len(s) * 0.99))] * 1e6, "n": len(s)}


@dataclass
class Report:
    """Baselines and results; ratios are worked out at the end, against the baselines
    as they stand then (the fork baseline is taken in two halves)."""

    baselines: dict = field(default_factory=dict)  # name -> (value, unit)
    rows: list = field(default_factory=list)
    info: dict = field(default_factory=dict)
    samples: dict = field(default_factory=dict)  # name -> (every sample, unit): measurements of few samples

    def row(self, name: str, value: float, unit: str, baseline: str, target: tuple | None = None) -> None:
        """``target``: ("x<=", r) or ("x>=", r) against the baseline, or ("<=", v) / (">=", v) absolute."""
        self.rows.append({"name": name, "value": value, "unit": unit, "baseline": baseline, "target": target})

    def baseline(self, name: str, st: dict, unit: str = "us") -> None:
        """A baseline's median and p99 (``stats``), for ``latency`` rows to be measured against."""
        self.baselines[f"{name} median"], self.baselines[f"{name} p99"] = (st["median"], unit), (st["p99"], unit)

    def latency(
        self, name: str, st: dict, base: str, median_target: tuple | None = None, p99_target: tuple | None = None
    ) -> None:
        """Two rows, median and p99, against the baseline's median and p99."""
        self.row(f"{name} median", st["median"], "us", base + " median", median_target)
        self.row(f"{name} p99", st["p99"], "us", base + " p99", p99_target)

    def results(self) -> list[dict]:
        out = []
        for r in self.rows:
            base = self.baselines[r["baseline"]][0]
            ratio = r["value"] / base
            target, ok = r["target"], None
            if target:
                op, limit = target
                subject = ratio if op.startswith("x") else r["value"]
                ok = subject <= limit if op.endswith("<=") else subject >= limit
                target = f"{op[-2:]} {limit:g}x" if op.startswith("x") else f"{op} {_fmt(limit, r['unit'])}"
            out.append({**r, "baseline_value": base, "ratio": ratio, "target": target, "ok": ok})
        return out

    def json(self) -> dict:
        out = {
            "info": self.info,
            "baselines": {k: {"value": v, "unit": u} for k, (v, u) in self.baselines.items()},
            "results": self.results(),
        }
        if self.samples:
            out["samples"] = {k: {"values": v, "unit": u} for k, (v, u) in self.samples.items()}
        return out

    def table(self) -> str:
        lines = [f"forsetictl bench: {', '.join(f'{k} {v}' for k, v in self.info.items())}", "", "baselines (this run)"]
        wn = max([34, *(len(name) for name in self.baselines)])
        for name, (value, unit) in self.baselines.items():
            lines.append(f"  {name:<{wn}} {_fmt(value, unit):>14}")
        results = self.results()
        w = max([42, *(len(r["name"]) for r in results)])  # the columns as wide as their longest
        wb = max([30, *(len(r["baseline"]) for r in results)])
        lines += ["", f"  {'measurement':<{w}} {'value':>14} {'x base':>8}  {'baseline':<{wb}} target"]
        for r in results:
            mark = "" if r["ok"] is None else ("  ok" if r["ok"] else "  MISSED")
            target = (r["target"] or "") + mark
            value = _fmt(r["value"], r["unit"])
            lines.append(f"  {r['name']:<{w}} {value:>14} {r['ratio']:>7.2f}x  {r['baseline']:<{wb}} {target}".rstrip())
        if self.samples:
            lines += ["", "every sample"]
            ws = max(len(name) for name in self.samples)
            for name, (values, unit) in self.samples.items():
                lines.append(f"  {name:<{ws}}  {'  '.join(_fmt(v, unit) for v in values)}")
        return "\n".join(lines)


def _fmt(value: float, unit: str) -> str:
    if unit == "us":
        return f"{value / 1000:.2f} ms" if value >= 10_000 else f"{value:.0f} us"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "B":
        return f"{value:.0f} B"
    return f"{value:,.0f} {unit}"


class Progress:
    """One line on a terminal's stderr, rewritten per phase; silent otherwise."""

    def __init__(self, enabled: bool, phases: int) -> None:
        self.enabled, self.phases, self.n = enabled and sys.stderr.isatty(), phases, 0

    def __call__(self, what: str) -> None:
        self.n += 1
        if self.enabled:
            sys.stderr.write(f"\r\033[K[{self.n}/{self.phases}] {what}...")
            sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()

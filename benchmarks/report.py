"""Plain-text (markdown) tables of a benchmark run.

Figures are truncated in the direction that flatters Apollo least: rates and
ratios are rounded down, latencies and times up. PASS/MISS is decided on the
unrounded values.
"""

from __future__ import annotations

import math


def down(value: float, digits: int = 1) -> str:
    scale = 10**digits
    return f"{math.floor(value * scale) / scale:,.{digits}f}"


def up(value: float, digits: int = 2) -> str:
    scale = 10**digits
    return f"{math.ceil(value * scale) / scale:,.{digits}f}"


def size_label(size: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} B"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]  # fmt: skip
    for row in rows:
        lines.append("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def figure(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit in ("s", "ms"):
        return f"{up(value, 3 if unit == 's' else 2)} {unit}"
    if unit == "ops/s":
        return f"{down(value, 0)} ops/s"
    return f"{down(value, 1)} {unit}"


def verdict_cells(row: dict) -> tuple[str, str]:
    """(target text, result text with the gap) of one comparison row."""
    target, kind = row.get("target"), row.get("target_kind")
    if row.get("errors"):
        return (_target_text(row) if target is not None else "—"), f"ERROR ({row['errors']} failed requests)"
    if target is None:
        return "—", "info"
    if row.get("ratio" if kind == "ratio" else "value") is None:
        return _target_text(row), "NO FIGURE (no request completed)"
    if kind == "ratio":
        passed, gap, unit, digits = row["ratio"] >= target, (row["ratio"] - target) * 100, "pts", 1
    else:
        passed, gap, unit = row["value"] < target, target - row["value"], row["unit"]
        digits = 3 if unit == "s" else 1
    # The gap is rounded toward the unflattering side too: a margin down, a shortfall up.
    gap_text = f"+{down(gap, digits)}" if gap >= 0 else f"−{up(-gap, digits)}"
    return _target_text(row), f"{'PASS' if passed else 'MISS'} ({gap_text} {unit})"


def _target_text(row: dict) -> str:
    if row["target_kind"] == "ratio":
        return f"≥ {row['target'] * 100:g}% of {row['baseline_name']}"
    return f"< {row['target']:g} {row['unit']}"


def comparison_table(rows: list[dict]) -> str:
    out = []
    for row in rows:
        target, result = verdict_cells(row)
        ratio = f"{down(row['ratio'] * 100, 1)}%" if row.get("ratio") is not None else "—"
        latency = f"{up(row['p50_ms'], 2)} / {up(row['p99_ms'], 2)}" if row.get("p50_ms") is not None else "—"
        out.append([row["measurement"], str(row["concurrency"]), figure(row["value"], row["unit"]), latency,
                    row.get("baseline_name") or "—", figure(row.get("baseline"), row["unit"]), ratio, target,
                    result])  # fmt: skip
    headers = ["measurement", "conc", "Apollo", "Apollo p50 / p99 ms", "baseline", "baseline figure", "ratio",
               "target", "result"]  # fmt: skip
    return table(headers, out)


def runs_table(runs: list[dict]) -> str:
    out = []
    for run in runs:
        out.append([run["name"], str(run["concurrency"]), down(run["ops_s"], 1), down(run["mb_s"], 1),
                    up(run["p50_ms"], 2), up(run["p99_ms"], 2), str(run["ops"]), up(run["wall_s"], 2),
                    str(run["errors"]), f"{up(run['gen_cpu_pct'], 0)}%",
                    up(run["gen_cpu_us_per_op"], 0) if run["ops"] else "—",
                    "—" if run["srv_cpu_pct"] is None else f"{up(run['srv_cpu_pct'], 0)}%"])  # fmt: skip
    headers = ["run", "conc", "ops/s", "MB/s", "p50 ms", "p99 ms", "ops", "wall s", "errors", "generator CPU",
               "generator µs CPU/op", "server CPU"]  # fmt: skip
    return table(headers, out)


def config_table(config: dict) -> str:
    return table(["setting", "value"], [[k, str(v)] for k, v in config.items()])


def render(config: dict, rows: list[dict], runs: list[dict], notes: list[str]) -> str:
    parts = ["## Configuration", "", config_table(config), "", "## Results against targets", "",
             comparison_table(rows), "", "## Every run", "", runs_table(runs), ""]  # fmt: skip
    errors = [run for run in runs if run["errors"]]
    if errors:
        parts += ["## Errors", ""]
        parts += [f"- {run['name']} (conc {run['concurrency']}): {run['errors']} failed; first: {run['first_error']}"
                  for run in errors]  # fmt: skip
        parts.append("")
    parts += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(parts)

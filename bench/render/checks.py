"""One-off measured checks (bench/checks.json): what, command, result, date."""

from __future__ import annotations


def render(d: dict) -> list[str]:
    lines = ["## Measured checks", "", d["about"], "", "| date | what | command | result |", "|---|---|---|---|"]
    for c in d["checks"]:
        cmd = c["command"].replace("|", "\\|")
        lines.append(f"| {c['date']} | {c['what']} | `{cmd}` | {c['result']} |")
    return lines + [""]

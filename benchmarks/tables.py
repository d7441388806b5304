"""The markdown table the benchmark scripts print (rows of dicts, floats to one decimal), as docs/ quotes them."""

from __future__ import annotations


def markdown_table(rows: list[dict], header: bool = True) -> str:
    """``rows`` (dicts with the same keys, in column order) as markdown; ``header=False`` prints rows only,
    for printing a table one row at a time as its rows are measured."""
    keys = list(rows[0])
    lines = []
    if header:
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [f"{row[k]:.1f}" if isinstance(row[k], float) else str(row[k]) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)

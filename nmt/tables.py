"""Markdown tables of results, rendered one way: evaluate.py's BLEU table and the study report's tables.

``markdown_table(head, rows)`` renders a header and rows of cells already formatted; ``cell(value, spec)``
formats one value, and writes ``—`` for a value that is missing (None), never "None" or "nan"; ``per_seed(parts)``
one cell of a value that each seed has.
"""

from __future__ import annotations

MISSING = "—"


def cell(value, spec: str = ".2f") -> str:
    """``value`` formatted with ``spec`` (as ``format(value, spec)``), or ``—`` if it is None."""
    return MISSING if value is None else format(value, spec)


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table: the header, its separator, one line per row."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def count(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless n is 1: "1 run", "3 runs"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def per_seed(parts: list[str]) -> str:
    """One cell for a value given per seed: "; "-joined in seed order, or the value once and "(all N seeds)" when
    every seed has the same one ("max_steps @ 220 (all 3 seeds)")."""
    if len(parts) > 1 and len(set(parts)) == 1 and parts[0] != MISSING:
        return f"{parts[0]} (all {len(parts)} seeds)"
    return "; ".join(parts)

"""The quality table as text and markdown, and the README section ``make quality --readme`` rewrites."""

from __future__ import annotations

from pathlib import Path

MARKER_START, MARKER_END = "<!-- quality:start -->", "<!-- quality:end -->"
# the GPU tier's table (make quality SEGMENTER=inspyrenet MODEL_PATH=...), beside the CPU tier's
GPU_MARKERS = "<!-- quality-gpu:start -->", "<!-- quality-gpu:end -->"


def format_text(header: list[str], rows: list[list[str]]) -> str:
    """Aligned columns (the first two left, the rest right); an empty row is a rule."""
    widths = [max(len(header[i]), *(len(r[i]) for r in rows if r)) for i in range(len(header))]
    left = {0, 1}

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule] + [line(r) if r else rule for r in rows])


def format_markdown(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows if r]
    return "\n".join(out)


def write_section(path: Path, body: str, markers: tuple[str, str] = (MARKER_START, MARKER_END)) -> bool:
    """Replace what lies between the ``markers`` (:data:`MARKER_START` and :data:`MARKER_END`) in
    ``path`` with ``body``; False (and ``path`` untouched) when they are not there, in that order."""
    first, last = markers
    text = path.read_text(encoding="utf-8")
    start, end = text.find(first), text.find(last)
    if start < 0 or end < start:
        return False
    path.write_text(text[:start + len(first)] + "\n" + body.strip() + "\n" + text[end:], encoding="utf-8")
    return True

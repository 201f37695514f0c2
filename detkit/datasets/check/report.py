"""The check's findings as text (grouped by kind, counted) or as JSON lines, and its one-line summary."""
from __future__ import annotations

import json
import os
from typing import Iterator

from detkit.datasets.check.findings import ERROR, KINDS, NOTE, WARNING, CheckReport, Finding

SEVERITY_WORDS = {ERROR: "errors", WARNING: "warnings", NOTE: "notes"}


def json_lines(report: CheckReport) -> Iterator[str]:
    """One JSON object per finding."""
    for finding in report.findings:
        yield json.dumps(finding.as_dict())


def summary_line(report: CheckReport) -> str:
    """"check: 1 error (exif_mismatch 1), 2 warnings (rare_class 2), 4 notes (empty_image 4)"."""
    parts = []
    for severity, word in SEVERITY_WORDS.items():
        counts = report.kind_counts(severity)
        total = sum(counts.values())
        if total:
            kinds = ", ".join(f"{k} {n}" for k, n in counts.items())
            parts.append(f"{total} {word[:-1] if total == 1 else word} ({kinds})")
    what = "annotations" if not report.images_read else "annotations and images"
    checked = ", ".join(f"{s} {c.images} images {c.boxes} boxes" for s, c in report.splits.items())
    return f"check of the {what} ({checked}): " + ("; ".join(parts) or "nothing found")


def format_text(report: CheckReport, limit: int = 10) -> str:
    """Every kind found, worst first: a header with its count and what to do, then up to `limit` findings (0: all)."""
    lines = [summary_line(report)]
    for severity in (ERROR, WARNING, NOTE):
        for kind, what_fix in KINDS.items():
            found = [f for f in report.findings if f.kind == kind and f.severity == severity]
            if not found:
                continue
            what, fix = what_fix
            lines += ["", f"{severity} {kind} ({len(found)}): {what}; {fix}"]
            shown = found if limit <= 0 else found[:limit]
            lines += [f"  {_line(f)}" for f in shown]
            if len(shown) < len(found):
                lines.append(f"  ... and {len(found) - len(shown)} more (--all or --json lists every finding)")
    return "\n".join(lines)


def _line(f: Finding) -> str:
    """One finding: where, the box, what is wrong, and what --fix does when it differs from the kind's advice."""
    where = f.file
    if f.image.startswith(f.file):  # a record: "shard record N (name.jpg)"
        where = f.image
    elif f.image and not f.file.endswith(os.path.basename(f.image)):
        where += f" ({os.path.basename(f.image)})"
    box = f" [{', '.join(f'{v:g}' for v in (round(x, 1) for x in f.box))}]" if f.box is not None else ""
    split = f"{f.split}: " if f.split else ""
    fix = f" -> {f.fix}" if f.fix and f.fix != KINDS[f.kind][1] else ""
    return f"{split}{where}{box}: {f.message}{fix}"

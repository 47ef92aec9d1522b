"""Rows of the bench as plain dicts, and the table they print as.

A row is JSON-serialisable so that the worker in its PID namespace can
hand it back on a pipe. ``check`` holds the figure a row's target is
about (``value`` against ``limit``, lower is better); rows without a
target only report.
"""

import statistics

MIB = 1 << 20


def timed(label, times, base, target="report", check=None, note=""):
    return {"label": label, "runs": len(times),
            "median_s": statistics.median(times),
            "bare_s": statistics.median(base) if base else None,
            "target": target, "check": check, "note": note,
            "times_s": times, "bare_times_s": base}


def sized(label, size, target="report", check=None, note=""):
    return {"label": label, "bytes": size, "target": target,
            "check": check, "note": note}


def skipped(label, why, target="report"):
    return {"label": label, "skip": why, "target": target}


def check(what, value, limit):
    return {"what": what, "value": value, "limit": limit}


def ratio(row):
    if row.get("bare_s") and row.get("median_s") is not None:
        return row["median_s"] / row["bare_s"]
    return None


def progress(row):
    """The line the bench prints on stderr when *row* is done."""
    if "median_s" in row:
        return "%s: %.1f ms" % (row["label"], row["median_s"] * 1e3)
    if row.get("skip"):
        return "%s: skipped (%s)" % (row["label"], row["skip"])
    return None


def render(rows):
    """The table, then one line per note or skip."""
    head = ("row", "runs", "median", "bare", "x bare", "target", "result")
    lines = [_cells(row) for row in rows]
    widths = [max(len(r[i]) for r in [head] + lines) for i in range(7)]
    out = [_join(head, widths), _join(["-" * w for w in widths], widths)]
    out += [_join(cells, widths) for cells in lines]
    notes = [(row["label"], row.get("skip") and "skipped: " + row["skip"]
              or row.get("note")) for row in rows]
    out += [""] + ["%s: %s" % (label, " ".join(text.split()))
                   for label, text in notes if text]
    return "\n".join(out)


def _cells(row):
    if row.get("skip"):
        return [row["label"], "-", "-", "-", "-", row["target"], "skipped"]
    if "bytes" in row:
        return [row["label"], "-", _size(row["bytes"]), "-", "-",
                row["target"], _result(row.get("check"))]
    r = ratio(row)
    return [row["label"], str(row["runs"]), _ms(row["median_s"]),
            _ms(row["bare_s"]), "%.2f" % r if r else "-", row["target"],
            _result(row.get("check"))]


def _result(chk):
    if not chk:
        return "-"
    verdict = "met" if chk["value"] <= chk["limit"] else "MISSED"
    return "%s: %s %.3f (limit %g)" % (verdict, chk["what"], chk["value"],
                                       chk["limit"])


def _ms(seconds):
    if seconds is None:
        return "-"
    return "%.1f ms" % (seconds * 1e3) if seconds < 10 else "%.1f s" % seconds


def _size(size):
    return "%.2f MiB" % (size / MIB) if size >= MIB / 4 else "%d KiB" % (
        size // 1024)


def _join(cells, widths):
    first = cells[0].ljust(widths[0])
    rest = [c.rjust(w) if i <= 4 else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells[1:], widths[1:]), 1)]
    return "  ".join([first] + rest).rstrip()

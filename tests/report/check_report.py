#!/usr/bin/env python3
"""Checks a `loadtest report` HTML page by looking at it in headless Chromium.

Usage: check_report.py --report report.html --work DIR RUN.json [RUN.json ...]

Renders the page with `chromium --headless --dump-dom` and `--screenshot`
and asserts that:
  - the page is self-contained (no scripts, links, external images or fonts);
  - every run's label is in the rendered DOM, in the summary table and in the
    legend of every chart;
  - every chart (latency by percentile, throughput, router CPU, router RSS)
    holds a curve (an SVG polyline) in each run's colour, and its axis labels
    (the nines 0% .. 99.999%, max; the axis descriptions);
  - the numbers in the summary table are the JSON files' figures;
  - the screenshot is not blank, and each run's colour is drawn by the charts:
    the page is shot a second time with the charts' SVG hidden (layout kept),
    and the first shot must hold clearly more pixels of each run's colour.

Only the Python standard library: the PNG files are decoded here with zlib.
"""

import argparse
import html.parser
import json
import os
import re
import struct
import subprocess
import sys
import zlib

FAILURES = []


def check(cond, what):
    if cond:
        print(f"ok   {what}")
    else:
        print(f"FAIL {what}")
        FAILURES.append(what)
    return cond


# ---------------------------------------------------------------- Chromium


def chromium_cmd(binary, work, *args):
    return [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={os.path.join(work, 'chromium-profile')}",
        *args,
    ]


def dump_dom(binary, work, path):
    out = subprocess.run(
        chromium_cmd(binary, work, "--dump-dom", "file://" + os.path.abspath(path)),
        capture_output=True,
        timeout=90,
    )
    if out.returncode != 0:
        sys.stderr.write(out.stderr.decode(errors="replace")[-3000:])
        raise SystemExit(f"chromium --dump-dom exited {out.returncode}")
    return out.stdout.decode("utf-8", errors="replace")


def screenshot(binary, work, path, png, size):
    if os.path.exists(png):
        os.remove(png)
    out = subprocess.run(
        chromium_cmd(binary, work, f"--screenshot={png}", f"--window-size={size}", "file://" + os.path.abspath(path)),
        capture_output=True,
        timeout=90,
    )
    if out.returncode != 0 or not os.path.exists(png):
        sys.stderr.write(out.stderr.decode(errors="replace")[-3000:])
        raise SystemExit(f"chromium --screenshot exited {out.returncode}, no {png}")


# ---------------------------------------------------------------- PNG


def read_png(path):
    """Returns (width, height, rows) with rows a list of bytes, RGB(A) 8-bit."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG")
    pos, idat, ihdr = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    width, height, depth, ctype, _, _, interlace = ihdr
    if depth != 8 or ctype not in (2, 6) or interlace != 0:
        raise ValueError(f"{path}: unsupported PNG (depth {depth}, colour type {ctype}, interlace {interlace})")
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        base = y * (stride + 1)
        ftype = raw[base]
        line = bytearray(raw[base + 1 : base + 1 + stride])
        if ftype == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif ftype == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev))
        elif ftype == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif ftype == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        elif ftype != 0:
            raise ValueError(f"{path}: bad PNG filter {ftype}")
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def colour_counts(png, colours, tolerance=48):
    """Pixels near each colour, and the share of pixels that are not white."""
    width, height, bpp, rows = read_png(png)
    counts = {c: 0 for c in colours}
    targets = [(c, int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)) for c in colours]
    not_white = 0
    seen = {}
    for row in rows:
        for x in range(0, width * bpp, bpp):
            px = row[x : x + 3]
            n = seen.get(px)
            if n is None:
                n = seen[px] = None if px == b"\xff\xff\xff" else next(
                    (c for c, r, g, b in targets if abs(px[0] - r) + abs(px[1] - g) + abs(px[2] - b) <= tolerance), ""
                )
            if n is None:
                continue
            not_white += 1
            if n:
                counts[n] += 1
    return counts, not_white / float(width * height), len(seen)


# ---------------------------------------------------------------- DOM


class Dom(html.parser.HTMLParser):
    """Collects the summary table, and each chart's polylines and texts."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.text = []
        self.headers = []
        self.rows = []  # (attrs, [cell texts])
        self.charts = {}  # id -> {"strokes": [(stroke, points)], "texts": [...]}
        self._cell = None
        self._in_th = False
        self._chart = None
        self._in_text = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "figure" and "chart" in (a.get("class") or ""):
            self._chart = a.get("id")
            self.charts[self._chart] = {"strokes": [], "texts": []}
        elif tag == "tr" and "data-label" in a:
            self.rows.append((a, []))
        elif tag == "th":
            self._in_th = True
            self.headers.append("")
        elif tag == "td" and self.rows:
            self._cell = ""
        elif tag == "polyline" and self._chart:
            points = len((a.get("points") or "").split())
            self.charts[self._chart]["strokes"].append(((a.get("stroke") or "").upper(), points))
        elif tag == "text" and self._chart:
            self._in_text = True
            self.charts[self._chart]["texts"].append("")

    def handle_endtag(self, tag):
        if tag == "figure":
            self._chart = None
        elif tag == "th":
            self._in_th = False
        elif tag == "td" and self._cell is not None and self.rows:
            self.rows[-1][1].append(self._cell.strip())
            self._cell = None
        elif tag == "text":
            self._in_text = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_th:
            self.headers[-1] += data
        if self._cell is not None:
            self._cell += data
        if self._in_text and self._chart:
            self.charts[self._chart]["texts"][-1] += data.strip()


def number(cell):
    return float(cell.replace(",", ""))


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--report", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--chromium", default="chromium")
    ap.add_argument("--window-size", default="1280,2300")
    ap.add_argument("runs", nargs="+")
    args = ap.parse_args()

    runs = [json.load(open(p)) for p in args.runs]
    labels = [r["label"] for r in runs]
    raw = open(args.report, encoding="utf-8").read()

    for bad in ("<script", "src=", "href=", "url(", "@import", "<link", "<img"):
        check(bad not in raw, f"self-contained: no {bad!r} in the HTML")

    dom = Dom()
    dom.feed(dump_dom(args.chromium, args.work, args.report))
    text = " ".join(dom.text)

    for label in labels:
        check(label in text, f"label {label!r} in the rendered DOM")

    charts = {
        "latency": (
            ["Latency by percentile", "percentile (log scale of nines)", "latency (log scale)", "0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "max"],
            True,
        ),
        "throughput": (["Throughput over time", "time since the measurement started (s)", "messages per second"], True),
        "router-cpu": (["Router CPU over time", "router CPU (% of one core)", "time since the measurement started (s)"], True),
        "router-rss": (["Router memory (RSS) over time", "router RSS (MiB)", "time since the measurement started (s)"], True),
    }
    rows = {a.get("data-label"): (a, cells) for a, cells in dom.rows}
    colours = {}
    for label in labels:
        if check(label in rows, f"summary row for {label!r}"):
            colours[label] = (rows[label][0].get("data-color") or "").upper()
    check(len(set(colours.values())) == len(labels), f"each run has its own colour: {colours}")

    for cid, (axis_texts, _) in charts.items():
        chart = dom.charts.get(cid)
        if not check(chart is not None, f"chart {cid} present"):
            continue
        for t in axis_texts:
            check(t in chart["texts"], f"chart {cid}: axis text {t!r}")
        # the y axis has tick labels with digits
        ticks = [t for t in chart["texts"] if re.search(r"\d", t)]
        check(len(ticks) >= 4, f"chart {cid}: tick labels ({len(ticks)})")
        for label in labels:
            check(any(label in t for t in chart["texts"]), f"chart {cid}: legend names {label!r}")
            # a curve, not just the legend's swatch (2 points)
            c = colours.get(label, "?")
            longest = max([n for s, n in chart["strokes"] if s == c] or [0])
            check(longest >= 5, f"chart {cid}: a curve in {label!r}'s colour {c} (an SVG polyline of {longest} points)")

    # the table's numbers are the JSON figures
    heads = [h.strip() for h in dom.headers]
    cols = {h: i - 1 for i, h in enumerate(heads)}  # first column: the colour swatch

    def cell(label, head):
        a, cells = rows[label]
        i = cols.get(head)
        return cells[i + 1] if i is not None and i + 1 < len(cells) else None

    for r in runs:
        label = r["label"]
        if label not in rows:
            continue
        for head, want in (("scenario", r["scenario"]), ("serializer", r["serializer"]), ("mode", r["mode"]), ("label", label)):
            check(cell(label, head) == want, f"{label!r}: {head} {cell(label, head)!r} == {want!r}")
        for head, want, tol in (
            ("sent/s", r["sent_per_s"], 0.51),
            ("received/s", r["received_per_s"], 0.51),
            ("p50 µs", r["latency"]["p50_us"], 0.051),
            ("p99 µs", r["latency"]["p99_us"], 0.051),
            ("p99.9 µs", r["latency"]["p999_us"], 0.051),
            ("max µs", r["latency"]["max_us"], 0.051),
            ("errors", r["errors"], 0),
            ("router CPU %", r["router"]["cpu_pct_mean"], 0.51),
            ("router RSS max MiB", r["router"]["rss_max_bytes"] / 1048576.0, 0.051),
        ):
            got = cell(label, head)
            try:
                ok = got is not None and abs(number(got) - want) <= tol
            except ValueError:
                ok = False
            check(ok, f"{label!r}: table {head} {got!r} matches the JSON {want:.3f}")

    # the picture: not blank, and each run's colour drawn by the charts
    full = os.path.join(args.work, "report.png")
    bare_html = os.path.join(args.work, "report-no-charts.html")
    bare = os.path.join(args.work, "report-no-charts.png")
    with open(bare_html, "w", encoding="utf-8") as f:
        f.write(raw.replace("</head>", "<style>figure.chart svg { visibility: hidden; }</style></head>", 1))
    screenshot(args.chromium, args.work, args.report, full, args.window_size)
    screenshot(args.chromium, args.work, bare_html, bare, args.window_size)
    want = list(colours.values())
    with_charts, ink, distinct = colour_counts(full, want)
    without, _, _ = colour_counts(bare, want)
    check(ink > 0.02, f"screenshot not blank: {ink:.1%} of its pixels are not white")
    check(distinct > 50, f"screenshot has detail: {distinct} distinct colours")
    for label, c in colours.items():
        drawn = with_charts[c] - without[c]
        check(drawn >= 500, f"screenshot: {drawn} pixels of {label!r}'s colour {c} drawn by the charts ({with_charts[c]} with, {without[c]} without)")

    if FAILURES:
        print(f"report check: {len(FAILURES)} failed")
        return 1
    print("report check: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

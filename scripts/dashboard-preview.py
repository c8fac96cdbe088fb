#!/usr/bin/env python3
"""Plots the Grafana dashboard's panels from a Prometheus, as an HTML page of SVG charts laid out
as the dashboard lays them out (Grafana itself is not installable here).

Usage: dashboard-preview.py PROMETHEUS_URL START END OUT.html
START and END are unix times; every panel query is run over them with query_range.
"""
import html
import json
import re
import sys
import urllib.parse
import urllib.request

DASHBOARD = "helm/sse-relay/files/grafana-dashboard.json"
COLOURS = ["#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9", "#705da0"]
WIDTH, HEIGHT, PAD = 560, 230, 44


def query_range(prometheus, expr, start, end):
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": 2})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{params}") as response:
        answer = json.load(response)
    if answer["status"] != "success":
        sys.exit(f"{expr}: {answer}")
    return answer["data"]["result"]


def legend(template, labels):
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template) or expr_name(labels)


def expr_name(labels):
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"


def number(value, unit):
    if unit == "percentunit":
        return f"{value * 100:.2g}%"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if abs(value) < 1 else f"{value:.0f} s"
    return f"{value:.3g}"


def panel_svg(panel, series, start, end):
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
    values = [v for _, points in series for _, v in points]
    low, high = (min(values + [0.0]), max(values + [0.0])) if values else (0.0, 1.0)
    if high == low:
        high = low + 1
    x = lambda t: PAD + (t - start) / max(end - start, 1) * (WIDTH - PAD - 8)
    y = lambda v: HEIGHT - 40 - (v - low) / (high - low) * (HEIGHT - 70)
    parts = [
        f'<svg width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#181b1f" rx="4"/>',
        f'<text x="10" y="18" fill="#d8d9da" font-size="13">{html.escape(panel["title"])}</text>',
    ]
    for fraction in (0, 0.5, 1):
        value = low + (high - low) * fraction
        parts.append(f'<line x1="{PAD}" x2="{WIDTH - 8}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#2c3235"/>')
        parts.append(f'<text x="4" y="{y(value) + 4:.1f}" fill="#9fa7b3" font-size="10">{number(value, unit)}</text>')
    for i, (name, points) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
        parts.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        parts.append(f'<rect x="{10 + (i % 3) * 180}" y="{HEIGHT - 28 + (i // 3) * 12}" width="8" height="8" fill="{colour}"/>')
        parts.append(f'<text x="{22 + (i % 3) * 180}" y="{HEIGHT - 20 + (i // 3) * 12}" fill="#d8d9da" font-size="10">{html.escape(name[:30])}</text>')
    if not series:
        parts.append(f'<text x="{WIDTH / 2 - 30}" y="{HEIGHT / 2}" fill="#9fa7b3" font-size="12">No data</text>')
    parts.append("</svg>")
    return "".join(parts)


def main():
    prometheus, start, end, out = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    dashboard = json.load(open(DASHBOARD))
    cells = []
    for panel in dashboard["panels"]:
        series = []
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "15s")
            for result in query_range(prometheus, expr, start, end):
                points = [(float(t), float(v)) for t, v in result["values"] if v not in ("NaN", "+Inf", "-Inf")]
                series.append((legend(target.get("legendFormat", ""), result["metric"]), points))
        grid = panel["gridPos"]
        cells.append((grid["y"], grid["x"], panel_svg(panel, series, start, end)))
    cells.sort()
    body = "".join(f'<div style="display:inline-block;margin:4px">{svg}</div>' for _, _, svg in cells)
    with open(out, "w") as page:
        page.write(
            '<!doctype html><html><body style="background:#111217;margin:8px;width:1160px">'
            f'<h2 style="color:#d8d9da;font-family:sans-serif;font-size:16px">{html.escape(dashboard["title"])}'
            " — panels plotted from Prometheus</h2>"
            f"{body}</body></html>"
        )


if __name__ == "__main__":
    main()

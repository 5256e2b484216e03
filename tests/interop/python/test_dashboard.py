"""The Grafana dashboard docs/grafana/switchyard.json against the router's /metrics.

Without a router: the file is a Grafana dashboard (schemaVersion, a Prometheus
`datasource` variable every panel and query uses, `job`/`instance`/`shard`/
`realm` variables from label_values, panels with unique ids and non-overlapping
gridPos on the 24-column grid, every query with a refId and an expr).

With the fixture's router (1 and 2 shards, INTEROP_SHARDS): every metric name
in every expr and variable query is a family of GET /metrics with its # HELP
and # TYPE (histograms through their _bucket/_sum/_count series, never bare);
counters only inside rate()/increase(), gauges never; the labels each selector
and `by (...)` names are labels the router's series have (plus Prometheus'
job and instance); and the shard variable finds one shard per router shard.

Switchyard only: skipped under ROUTER=crossbar (no /metrics there).
"""

import json
import re
import urllib.request
from pathlib import Path

import pytest

DASHBOARD = Path(__file__).resolve().parents[3] / "docs" / "grafana" / "switchyard.json"

# the labels Prometheus adds to every scraped series
SCRAPE_LABELS = {"job", "instance"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
RANGE_FUNCTIONS = ("rate", "irate", "increase")
# families an operator needs on the dashboard (what docs/OPERATIONS.md promises)
REQUIRED = {
    "switchyard_connections", "switchyard_router_connections",
    "switchyard_sessions", "switchyard_router_sessions",
    "switchyard_messages_in", "switchyard_router_messages_in",
    "switchyard_messages_out", "switchyard_router_messages_out",
    "switchyard_publications", "switchyard_router_publications",
    "switchyard_events_delivered", "switchyard_router_events_delivered",
    "switchyard_calls", "switchyard_router_calls",
    "switchyard_call_duration_seconds", "switchyard_router_call_duration_seconds",
    "switchyard_realm_messages",
    "switchyard_mesh_sent", "switchyard_mesh_received", "switchyard_mesh_overflow",
    "switchyard_deflate_memory", "switchyard_router_deflate_messages",
    "switchyard_longpoll_transports", "switchyard_unix_accepted",
    "switchyard_router_auth_successes",
} | {"switchyard_router_" + n for n in (
    "events_dropped", "slow_consumers_disconnected", "mesh_full", "mesh_events_dropped",
    "calls_refused", "connections_refused", "uris_refused", "auth_failures",
    "authorization_denied", "protocol_violations", "panics")}

METRIC = re.compile(r"\bswitchyard_[A-Za-z0-9_:]*")
# a selector's label matchers: name{a="x",b=~"y"}
SELECTOR = re.compile(r"\b(switchyard_[A-Za-z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


# ---------------------------------------------------------------------------
# the dashboard


@pytest.fixture(scope="module")
def dashboard():
    assert DASHBOARD.is_file(), "{} is missing".format(DASHBOARD)
    with open(DASHBOARD, encoding="utf-8") as f:
        return json.load(f)


def all_panels(panels):
    """Every panel, those of collapsed rows included."""
    for p in panels:
        yield p
        yield from all_panels(p.get("panels") or [])


def queries(dashboard):
    """(where, PromQL) of every panel target and every query variable."""
    for p in all_panels(dashboard["panels"]):
        for t in p.get("targets") or []:
            yield "panel {} '{}' target {}".format(p["id"], p["title"], t.get("refId")), t["expr"]
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            yield "variable ${}".format(v["name"]), variable_query(v)


def variable_query(v):
    q = v["query"]
    return q["query"] if isinstance(q, dict) else q


def metric_names(expr):
    """The matches of the metric names in expr, those inside strings left out."""
    strings = [m.span() for m in STRING.finditer(expr)]
    return [m for m in METRIC.finditer(expr)
            if not any(a <= m.start() < b for a, b in strings)]


def datasource_variable(dashboard):
    found = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert len(found) == 1, "one datasource variable expected: {}".format(found)
    return found[0]


def test_dashboard_structure(dashboard):
    d = dashboard
    assert isinstance(d.get("title"), str) and d["title"]
    assert isinstance(d.get("uid"), str) and 0 < len(d["uid"]) <= 40, d.get("uid")
    assert isinstance(d.get("schemaVersion"), int) and 36 <= d["schemaVersion"] <= 41, \
        d.get("schemaVersion")
    assert {"from", "to"} <= set(d.get("time") or {}), d.get("time")
    assert isinstance(d.get("panels"), list) and d["panels"]
    assert isinstance(d.get("templating", {}).get("list"), list)

    ids = set()
    boxes = []
    for p in all_panels(d["panels"]):
        where = "panel {!r}".format(p.get("title"))
        assert isinstance(p.get("id"), int) and p["id"] > 0, where
        assert p["id"] not in ids, "{}: id {} used twice".format(where, p["id"])
        ids.add(p["id"])
        assert isinstance(p.get("type"), str) and p["type"], where
        assert isinstance(p.get("title"), str) and p["title"], where
        g = p.get("gridPos")
        assert isinstance(g, dict) and set(g) >= {"h", "w", "x", "y"}, where
        assert all(isinstance(g[k], int) for k in "hwxy"), (where, g)
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["y"] >= 0, (where, g)
        assert g["x"] + g["w"] <= 24, "{}: wider than the 24-column grid: {}".format(where, g)
        boxes.append((where, g))
        if p["type"] == "row":
            assert g["w"] == 24 and g["h"] == 1, (where, g)
            assert isinstance(p.get("collapsed"), bool), where
            if not p["collapsed"]:
                # an expanded row's panels follow it at the top level
                assert not p.get("panels"), "{}: expanded row with nested panels".format(where)
            continue
        assert p.get("panels") is None, "{}: only rows hold panels".format(where)
        targets = p.get("targets")
        assert isinstance(targets, list) and targets, "{}: no targets".format(where)
        refs = [t.get("refId") for t in targets]
        assert all(isinstance(r, str) and r for r in refs), (where, refs)
        assert len(set(refs)) == len(refs), "{}: refIds repeat: {}".format(where, refs)
        for t in targets:
            assert isinstance(t.get("expr"), str) and t["expr"].strip(), (where, t)
        assert isinstance(p.get("fieldConfig", {}).get("defaults"), dict), where
    # no two panels share a cell (the nested panels of collapsed rows are laid
    # out as they are when expanded)
    for i, (wa, a) in enumerate(boxes):
        for wb, b in boxes[i + 1:]:
            apart = (a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"]
                     or a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"])
            assert apart, "{} {} overlaps {} {}".format(wa, a, wb, b)


def test_datasource_and_variables(dashboard):
    ds = datasource_variable(dashboard)
    assert ds["query"] == "prometheus", ds
    ref = "${{{}}}".format(ds["name"])
    for p in all_panels(dashboard["panels"]):
        if p["type"] == "row":
            continue
        for owner in [p] + list(p["targets"]):
            src = owner.get("datasource")
            assert src == {"type": "prometheus", "uid": ref}, \
                "panel {!r}: datasource {!r}, not the variable {}".format(p["title"], src, ref)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert len(variables) == len(dashboard["templating"]["list"]), "variable names repeat"
    for name, label in (("job", "job"), ("instance", "instance"), ("shard", "shard"),
                        ("realm", "realm")):
        v = variables.get(name)
        assert v is not None and v["type"] == "query", "no query variable ${}".format(name)
        assert v["datasource"] == {"type": "prometheus", "uid": ref}, v
        q = variable_query(v)
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q)
        assert m and m.group(2) == label, "${}: {!r}".format(name, q)
        assert v.get("multi") and v.get("includeAll") and v.get("allValue") == ".*", v
    # the variables are used: every selector filters by job and instance
    # (per-shard families by shard: test_shard_variable_finds_every_shard)
    for where, expr in queries(dashboard):
        if where == "variable $job":
            continue
        wanted = {"job"} if where == "variable $instance" else {"job", "instance"}
        for m in metric_names(expr):
            selector = SELECTOR.match(expr, m.start())
            names = {x[0] for x in MATCHER.findall(selector.group(2))} if selector else set()
            assert wanted <= names, "{}: {} lacks the {} filters: {}".format(
                where, m.group(0), "/".join(sorted(wanted)), expr)


def test_every_expr_parses_roughly(dashboard):
    """Balanced brackets and quotes, and the Grafana variables it may use."""
    known = {"$__rate_interval", "$__range", "$__interval"} | {
        "$" + v["name"] for v in dashboard["templating"]["list"]}
    for where, expr in queries(dashboard):
        assert expr.count('"') % 2 == 0, (where, expr)
        bare = STRING.sub('""', expr)
        for o, c in ("()", "{}", "[]"):
            depth = 0
            for ch in bare:
                depth += (ch == o) - (ch == c)
                assert depth >= 0, (where, expr)
            assert depth == 0, (where, expr)
        for var in re.findall(r"\$\{?\w+\}?", expr):
            assert var.replace("{", "").replace("}", "") in known, (where, var)


# ---------------------------------------------------------------------------
# against a running router


def scrape(router):
    url = "http://127.0.0.1:{}/metrics".format(router.ws_port)
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        return resp.read().decode("utf-8")


def families(text):
    """{family: {"type", "help", "labels": set, "series": [(name, labels dict)]}}."""
    out = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            out.setdefault(name, {"labels": set(), "series": []})["help"] = help_text
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            out.setdefault(name, {"labels": set(), "series": []})["type"] = kind.strip()
        elif line and not line.startswith("#"):
            m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+\S+$", line)
            assert m, "unparsable sample line {!r}".format(line)
            name, labels = m.group(1), dict(
                (k, v) for k, _, v in MATCHER.findall(m.group(2) or ""))
            family = name
            if family not in out:
                for suffix in HISTOGRAM_SUFFIXES:
                    base = name[:-len(suffix)]
                    if name.endswith(suffix) and out.get(base, {}).get("type") == "histogram":
                        family = base
                        break
            assert family in out, "sample {!r} before its # TYPE".format(line)
            out[family]["labels"] |= set(labels)
            out[family]["series"].append((name, labels))
    return out


@pytest.fixture
def exposition(router):
    if router.kind != "switchyard":
        pytest.skip("ROUTER={}: /metrics is Switchyard's".format(router.kind))
    return families(scrape(router))


def resolve(name, fams):
    """(family, series suffix) of a metric name used in PromQL, or None."""
    if name in fams:
        return name, ""
    for suffix in HISTOGRAM_SUFFIXES:
        base = name[:-len(suffix)]
        if name.endswith(suffix) and fams.get(base, {}).get("type") == "histogram":
            return base, suffix
    return None


def test_every_family_has_help_and_type(router, exposition):
    assert exposition, "no metric families"
    for name, fam in exposition.items():
        assert fam.get("help"), "{}: no # HELP".format(name)
        assert fam.get("type") in ("counter", "gauge", "histogram"), (name, fam.get("type"))


def test_dashboard_metrics_exist(router, dashboard, exposition):
    used = set()
    for where, expr in queries(dashboard):
        for m in metric_names(expr):
            name = m.group(0)
            found = resolve(name, exposition)
            assert found is not None, \
                "{}: {} is not a family of the router's /metrics ({} shards)\n{}".format(
                    where, name, router.shards, expr)
            family, suffix = found
            used.add(family)
            kind = exposition[family]["type"]
            before = expr[:m.start()].rstrip()
            in_range_fn = re.search(r"\b({})\s*\($".format("|".join(RANGE_FUNCTIONS)), before)
            if where.startswith("variable"):
                assert kind != "histogram" or suffix, (where, name)
                continue
            if kind == "histogram":
                assert suffix, "{}: histogram {} used bare (use _bucket, _sum or _count)".format(
                    where, name)
            if kind == "counter" or kind == "histogram":
                assert in_range_fn, "{}: counter {} outside rate()/increase(): {}".format(
                    where, name, expr)
            else:
                assert not in_range_fn, "{}: gauge {} inside rate()/increase(): {}".format(
                    where, name, expr)
            if suffix == "_bucket":
                assert "histogram_quantile(" in expr or re.search(r"\bby\s*\([^)]*\ble\b", expr), \
                    "{}: {} buckets neither in histogram_quantile nor grouped by le".format(
                        where, name)
    missing = REQUIRED - used
    assert not missing, "the dashboard shows none of {}".format(sorted(missing))


def test_dashboard_labels_exist(router, dashboard, exposition):
    for where, expr in queries(dashboard):
        known_labels = set()
        for metric, matchers in SELECTOR.findall(expr):
            found = resolve(metric, exposition)
            assert found is not None, (where, metric)
            family, suffix = found
            have = exposition[family]["labels"] | SCRAPE_LABELS
            if suffix != "_bucket":
                have = have - {"le"}
            for label, _, _ in MATCHER.findall(matchers):
                assert label in have, "{}: {} has no label {!r} (it has {})".format(
                    where, metric, label, sorted(have))
            known_labels |= have
        for group in GROUPING.findall(expr):
            for label in filter(None, (x.strip() for x in group.split(","))):
                assert label in known_labels, "{}: by ({}) names a label none of its series " \
                                             "has: {}".format(where, label, expr)


def test_shard_variable_finds_every_shard(router, dashboard, exposition):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    query = variable_query(variables["shard"])
    metric = re.match(r"label_values\((switchyard_[A-Za-z0-9_:]*)", query)
    assert metric, query
    family, _ = resolve(metric.group(1), exposition)
    shards = {labels.get("shard") for _, labels in exposition[family]["series"]}
    assert shards == {str(i) for i in range(router.shards)}, \
        "${{shard}} ({}) would offer {}, the router has {} shards".format(
            query, sorted(shards, key=str), router.shards)
    # a per-shard family is always filtered by $shard; the summed families
    # (switchyard_router_*) carry no shard label to filter by
    for where, expr in queries(dashboard):
        if where.startswith("variable"):
            continue
        for metric, matchers in SELECTOR.findall(expr):
            family, _ = resolve(metric, exposition)
            filtered = any(label == "shard" and value == "$shard"
                           for label, _, value in MATCHER.findall(matchers))
            if "shard" in exposition[family]["labels"]:
                assert filtered, "{}: {} not filtered by $shard: {}".format(where, metric, expr)
            else:
                assert not filtered, (where, metric)
    realms = {labels.get("realm")
              for _, labels in exposition["switchyard_realm_messages"]["series"]}
    assert "realm1" in realms, realms

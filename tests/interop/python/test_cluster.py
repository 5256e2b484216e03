"""A cluster of three Switchyard nodes over NATS ([cluster]), with autobahn-python clients.

Each test gets a nats-server of its own on a free 127.0.0.1 port and three router
nodes joined to it as cluster "c1": a (1 shard), b (2 shards), c (1 shard), each
with the default config of conftest (conftest._start_router), realm1 keeping the
history of com.cluster.kept.* too (KEPT_RULE), plus a [cluster] section (heartbeat
100 ms, node timeout 1 s). The fixture waits until every node sees the two others
(switchyard_cluster_nodes{shard="0"} == 2). Cluster.kill SIGKILLs a node,
Cluster.restart starts it again (a new run under its name, nothing kept);
Cluster.stop_nats stops nats-server and Cluster.start_nats(cluster.nats_port) starts it
again on the port the nodes' nats_url names.

Interest crosses nodes asynchronously, so before publishing a test waits until the
publishing node knows the subscriptions of the others: its
switchyard_cluster_remote_interests{shard="0"} (one entry per realm, match policy and
URI per other node, however many subscribers; each callee of another node counts one
too) reaches the count expected.

The publisher is on node a over the test's transport; the subscribers on b and c use
the others too (cross-serializer across nodes). An event that must not be there is
shown by a later sentinel from the same publisher (one publisher's events reach a
subscriber in publication order) and by the nodes' counters, never by waiting.

Retained events and event history are kept on every node: after the publisher's node
is SIGKILLed the others serve get_retained and wamp.subscription.get_events, and the
node restarted gets a copy of both, each event once. The subscription meta API
(lookup, get, list_subscribers, count_subscribers, match, list) on a node without a
subscription of its own answers for the other nodes' subscribers. The session meta API
spans the nodes: wamp.session.count and list on a count and name every node's sessions,
get gives another node's session's details, kill ends a session on another node
(wamp.close.killed; realm1's meta_admin_roles has "anonymous"), and wamp.session.on_join
reaches a subscriber on another node.

RPC: a node learns another's callees asynchronously (one NATS round trip after
REGISTERED), so before calling a test polls the calling node's meta API until it counts
the callees expected (wait_callees: wamp.registration.lookup, then
wamp.registration.count_callees). Callers, callees and the meta sessions use different
transports of the three. Calls, errors, progressive results, CANCEL (kill, killnowait),
dealer-side timeouts, shared registrations over the three nodes (roundrobin; random;
last, then the callee before it once the last one unregisters or leaves; first with
callees answering wamp.error.unavailable, the call rerouted to the next callee on another
node) and a callee's node SIGKILLed with calls pending on it.

NATS stopped and started again on its port: while it is down the nodes lose each other
after node_timeout_ms (and tell on_leave of each other's sessions, which stay joined to
their own node) and each serves its own sessions; once it is back every node connects
again (switchyard_cluster_nats_connects{shard="0"} 2), the nodes announce all their
subscriptions, callees and sessions again, and the sessions from before the outage
publish, receive and call across nodes as before.

Switchyard only (skipped under ROUTER=crossbar); needs nats-server (NATS_SERVER,
else PATH, else /usr/sbin/nats-server).
"""

import asyncio
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request

import conftest
import pytest
from autobahn.wamp import message
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import (CallOptions, CallResult, PublishOptions, RegisterOptions,
                                 SubscribeOptions)

from harness import (PAYLOAD_ARGS, PAYLOAD_KWARGS, SENTINEL, TRANSPORTS, EventSink, Harness,
                     assert_same, disclosing, expect_app_error, normalize_result, run,
                     ticket_auth, until_sentinel)


def _nats_server_bin():
    path = os.environ.get("NATS_SERVER") or shutil.which("nats-server")
    if path:
        return path
    return "/usr/sbin/nats-server" if os.access("/usr/sbin/nats-server", os.X_OK) else None


NATS_SERVER = _nats_server_bin()

pytestmark = [
    pytest.mark.skipif(os.environ.get("ROUTER", "switchyard").strip().lower() != "switchyard",
                       reason="[cluster] (nodes over NATS) is Switchyard's"),
    pytest.mark.skipif(NATS_SERVER is None,
                       reason="no nats-server on this machine (Debian's nats-server package)"),
]

ACK = PublishOptions(acknowledge=True)
DETAILS = SubscribeOptions(details=True)
N = 50
DEADLINE = 15.0        # any single wait: cluster membership, interest, events
TEST_TIMEOUT = 20.0    # a test's coroutine, all of it
SHARDS = {"a": 1, "b": 2, "c": 1}
HEARTBEAT_MS = 100
NODE_TIMEOUT_MS = 1000

CLUSTER_CONFIG = """\
[cluster]
nats_url = "nats://127.0.0.1:{port}"
name = "c1"
node = "{node}"
heartbeat_ms = {heartbeat}
node_timeout_ms = {timeout}
"""


# realm1 of every node keeps the history of com.cluster.kept.* (5 events a topic), besides
# conftest's own rule: each node keeps what it gets by its own rules, so all have it
KEPT_PREFIX = "com.cluster.kept."
KEPT_LIMIT = 5
KEPT_RULE = """\
[[realm.history]]
uri = "{}"
match = "prefix"
limit = {}

""".format(KEPT_PREFIX, KEPT_LIMIT)


def _node_config(setup):
    """conftest's default config (SWITCHYARD_CONFIG) with KEPT_RULE in realm1."""
    text = conftest.SWITCHYARD_CONFIG.format(
        shards=setup.shards, ws_port=setup.ports["ws"], rs_port=setup.ports["rs"],
        principals=conftest._principals(), transport_listeners=setup.transport_listeners())
    at = text.index("[[realm.history]]")  # realm1's (conftest's test_event_history rule)
    assert text.index('name = "realm1"') < at < text.index('name = "realm.disclosed"'), text
    return text[:at] + KEPT_RULE + text[at:]


class _NodeConfig:
    """What conftest._start_router takes as a module with a switchyard_config."""
    switchyard_config = staticmethod(_node_config)


def _rot(transport, k):
    """The transport k places after transport in TRANSPORTS (subscribers use the
    publisher's and the two others)."""
    return TRANSPORTS[(TRANSPORTS.index(transport) + k) % len(TRANSPORTS)]


# ---------------------------------------------------------------------------
# metrics (GET /metrics on a node's WebSocket listener)

def _metrics_text(node):
    url = "http://127.0.0.1:{}/metrics".format(node.ws_port)
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200, resp.status
        return resp.read().decode()


def _value(text, series):
    m = re.search(r"^{} (-?\d+)$".format(re.escape(series)), text, re.M)
    assert m, "no {} on /metrics".format(series)
    return int(m.group(1))


def shard0(name):
    """The series of a node-wide gauge (kept on shard 0)."""
    return 'switchyard_{}{{shard="0"}}'.format(name)


def total(name):
    """A counter summed over the node's shards."""
    return "switchyard_router_{}".format(name)


def metric(node, series):
    return _value(_metrics_text(node), series)


def wait_metric_sync(node, series, want, deadline=DEADLINE):
    end = time.monotonic() + deadline
    while True:
        v = metric(node, series)
        if v == want:
            return
        assert node.alive(), "node {} died (exit code {}) waiting for {} == {}".format(
            node.cluster_node, node.proc.returncode, series, want)
        if time.monotonic() > end:
            raise AssertionError("node {}: {} stayed at {} (want {}) for {} s".format(
                node.cluster_node, series, v, want, deadline))
        time.sleep(0.02)


async def wait_metric(node, series, want, deadline=DEADLINE):
    """Polls node's series until it is want (a counter: until it reaches want, then it
    must be exactly want)."""
    end = time.monotonic() + deadline
    while True:
        v = await asyncio.to_thread(metric, node, series)
        if v >= want or time.monotonic() > end:
            break
        await asyncio.sleep(0.02)
    assert v == want, "node {}: {} is {}, want {}".format(node.cluster_node, series, v, want)


async def wait_gauge(node, series, want, deadline=DEADLINE):
    """Polls node's series (a gauge, which may go either way) until it is want."""
    end = time.monotonic() + deadline
    while True:
        v = await asyncio.to_thread(metric, node, series)
        if v == want:
            return
        assert time.monotonic() < end, "node {}: {} stayed at {} (want {}) for {} s".format(
            node.cluster_node, series, v, want, deadline)
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------------------
# the cluster: nats-server + nodes a, b, c

class Cluster:
    def __init__(self, workdir):
        self.workdir = workdir
        self.nats = None
        self.nats_port = None
        self.nats_log = workdir / "nats-server.log"
        self.nodes = {}
        self.killed = set()
        self.former = []  # (name, node) of the runs restart() replaced

    def start_nats(self, port=None):
        """nats-server on port (after stop_nats: the nodes' nats_url names it) or on a
        free one; returns once it accepts."""
        self.nats_port = port or conftest._free_port()
        with open(self.nats_log, "ab") as log:  # a restart's log after the first run's
            self.nats = subprocess.Popen(
                [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.nats_port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=str(self.workdir))
        end = time.monotonic() + conftest.STARTUP_TIMEOUT
        while not conftest._accepts(self.nats_port):
            if self.nats.poll() is not None or time.monotonic() > end:
                pytest.fail("nats-server did not listen on 127.0.0.1:{} (exit code {})\n{}".format(
                    self.nats_port, self.nats.poll(), self.nats_log.read_text("utf-8", "replace")))
            time.sleep(0.02)

    def stop_nats(self):
        """Stops nats-server (SIGTERM; the nodes lose their connection and keep trying
        it); start_nats(cluster.nats_port) starts it again where they look for it."""
        self.nats.terminate()
        self.nats.wait(timeout=DEADLINE)

    def start_node(self, name, shards, run=1):
        workdir = self.workdir / (name if run == 1 else "{}.{}".format(name, run))
        workdir.mkdir()
        extra = CLUSTER_CONFIG.format(port=self.nats_port, node=name, heartbeat=HEARTBEAT_MS,
                                      timeout=NODE_TIMEOUT_MS)
        node = conftest._start_router(shards, workdir, module=_NodeConfig, extra_config=extra)
        node.cluster_node = name
        node.run = run
        self.nodes[name] = node
        return node

    def restart(self, name):
        """Starts node name again (a new run, empty, in a directory of its own) after
        kill(name); returns it once it accepts (blocking: call it in a thread)."""
        old = self.nodes[name]
        assert name in self.killed and not old.alive(), name
        conftest._remove_unix_dir(old)
        self.former.append((name, old))
        self.killed.discard(name)
        del self.nodes[name]
        return self.start_node(name, old.shards, run=old.run + 1)

    def kill(self, name):
        """SIGKILL, as a crash would."""
        node = self.nodes[name]
        self.killed.add(name)
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(timeout=DEADLINE)
        assert node.proc.returncode == -signal.SIGKILL, node.proc.returncode

    def logs(self):
        parts = []
        runs = [(n, node, True) for n, node in self.former]
        runs += [(n, node, n in self.killed) for n, node in self.nodes.items()]
        for name, node, killed in runs:
            parts.append("--- node {} run {} ({} shards{}) stderr: {} ---\n{}".format(
                name, node.run, node.shards, ", SIGKILLed" if killed else "",
                node.stderr_path, conftest._tail(node.stderr_text()) or "<empty>"))
        try:
            parts.append("--- nats-server ---\n" + conftest._tail(
                self.nats_log.read_text("utf-8", "replace"), 5000))
        except OSError:
            pass
        return "\n".join(parts)

    def stop(self):
        """Every node (SIGTERM, exit code 0 within conftest's 10 s; a SIGKILLed one is
        only reaped), then nats-server; the first failure is raised after it all."""
        failure = None
        for name, node in self.nodes.items():
            try:
                if name in self.killed:
                    conftest._kill(node.proc)
                else:
                    conftest._stop_router(node)
            except BaseException as e:  # pytest.fail is a BaseException
                conftest._kill(node.proc)
                failure = failure or e
            finally:
                conftest._remove_unix_dir(node)
        if self.nats is not None and self.nats.poll() is None:
            self.nats.terminate()
            try:
                self.nats.wait(timeout=5)
            except subprocess.TimeoutExpired:
                conftest._kill(self.nats)
        if failure is not None:
            raise failure


@pytest.fixture
def cluster(request, tmp_path):
    """nats-server and nodes a (1 shard), b (2 shards), c (1 shard), each seeing the
    two others; all stopped at the end, also when the test or the start fails."""
    c = Cluster(tmp_path)
    try:
        c.start_nats()
        for name, shards in SHARDS.items():
            c.start_node(name, shards)
        for node in c.nodes.values():
            wait_metric_sync(node, shard0("cluster_nodes"), 2)
    except BaseException:
        print(c.logs())
        try:
            c.stop()
        except BaseException as e:  # the start's failure is the one to report
            print("and stopping the cluster failed too: {!r}".format(e))
        raise
    try:
        yield c
    finally:
        rep = getattr(request.node, "rep_call", None)
        dead = [n for n, node in c.nodes.items() if n not in c.killed and not node.alive()]
        if (rep is not None and rep.failed) or dead:
            print(c.logs())
        c.stop()


# ---------------------------------------------------------------------------
# tests

async def _publish_numbered(pub, topic, n):
    """n acknowledged publications 0..n-1 (all sent at once), then the sentinel: the
    publication ids, in order."""
    acks = [pub.publish(topic, i, options=ACK) for i in range(n)]
    ids = [p.id for p in await asyncio.gather(*acks)]
    ids.append((await pub.publish(topic, SENTINEL, options=ACK)).id)
    assert len(set(ids)) == n + 1, ids
    return ids


def test_events_cross_nodes_once_each_in_order(cluster, transport):
    """Subscribers on b (two sessions, one exact subscription) and c (prefix and
    wildcard) and a local one on a; a publisher on a: 50 acknowledged events and a
    sentinel reach each subscriber exactly once, in order, with the publication ids
    the publisher was given; one NATS frame per publication and node."""
    a, b, c = (cluster.nodes[n] for n in "abc")
    topic = "com.cluster.fanout.t"

    async def main():
        async with Harness(a) as ha, Harness(b) as hb, Harness(c) as hc:
            subs = {
                "b1": await hb.open(_rot(transport, 0), name="b1"),
                "b2": await hb.open(_rot(transport, 1), name="b2"),
                "c-prefix": await hc.open(_rot(transport, 2), name="c-prefix"),
                "c-wildcard": await hc.open(_rot(transport, 1), name="c-wildcard"),
                "a-local": await ha.open(_rot(transport, 2), name="a-local"),
            }
            sinks = {k: EventSink() for k in subs}
            options = {
                "c-prefix": SubscribeOptions(match="prefix", details=True),
                "c-wildcard": SubscribeOptions(match="wildcard", details=True),
            }
            uris = {"c-prefix": "com.cluster", "c-wildcard": "com..fanout.t"}
            subscriptions = {}
            for k, s in subs.items():
                subscriptions[k] = await s.subscribe(sinks[k].handler, uris.get(k, topic),
                                                     options=options.get(k, DETAILS))
            # b: one entry (exact topic, two sessions); c: two (prefix, wildcard)
            await wait_gauge(a, shard0("cluster_remote_interests"), 3)

            pub = await ha.open(transport, name="publisher")
            ids = await _publish_numbered(pub, topic, N)

            for k, sink in sinks.items():
                got, end = await until_sentinel(sink, timeout=DEADLINE)
                assert got == list(range(N)), "{} ({}) got {!r}".format(k, subs[k].spec.id, got)
                assert end == N + 1, (k, end)
                for i, (args, kwargs, details) in enumerate(sink.events):
                    assert details.publication == ids[i], (k, i, str(details))
                    assert details.subscription.id == subscriptions[k].id, (k, str(details))
                    assert details.topic in (None, topic), (k, str(details))
                    assert kwargs == {}, (k, kwargs)
                    assert details.publisher is None, (k, str(details))
            for k in ("c-prefix", "c-wildcard"):
                # pattern subscriptions name the concrete topic
                assert all(e[2].topic == topic for e in sinks[k].events), k

            # one frame per publication to each node, whatever its subscribers
            await wait_metric(a, total("cluster_events_sent"), N + 1)
            await wait_metric(b, total("cluster_events_received"), N + 1)
            await wait_metric(c, total("cluster_events_received"), N + 1)
            await wait_metric(a, total("cluster_events_received"), 0)
            # and each subscriber's EVENT once: two on every node but a
            await wait_metric(a, total("events_delivered"), N + 1)
            await wait_metric(b, total("events_delivered"), 2 * (N + 1))
            await wait_metric(c, total("events_delivered"), 2 * (N + 1))
            for node in (a, b, c):
                assert metric(node, total("cluster_events_dropped")) == 0, node.cluster_node

    run(main(), timeout=TEST_TIMEOUT)


def test_publisher_disclosure_and_payload_cross_nodes(cluster, transport):
    """disclose_me from a names the publisher (session id, authid, authrole) to
    subscribers on b and c; without it nothing is disclosed, and the payload
    fixtures arrive exact across serializers; realm.disclosed (publisher_disclosure
    = "always") discloses a WAMP-Ticket publisher on a to a subscriber on c."""
    a, b, c = (cluster.nodes[n] for n in "abc")
    topic = "com.cluster.disclose"

    async def main():
        async with Harness(a) as ha, Harness(b) as hb, Harness(c) as hc:
            subs = {
                "b": await hb.open(_rot(transport, 1), name="b"),
                "c": await hc.open(_rot(transport, 2), name="c"),
            }
            sinks = {k: EventSink() for k in subs}
            for k, s in subs.items():
                await s.subscribe(sinks[k].handler, topic, options=DETAILS)
            always = await hc.open(_rot(transport, 1), realm="realm.disclosed", name="c-always")
            always_sink = EventSink()
            await always.subscribe(always_sink.handler, topic, options=DETAILS)
            # realm1: b and c one entry each; realm.disclosed: c one
            await wait_gauge(a, shard0("cluster_remote_interests"), 3)

            pub = await ha.open(transport, name="publisher")
            plain = await pub.publish(topic, *PAYLOAD_ARGS, options=ACK, **PAYLOAD_KWARGS)
            with disclosing(pub):
                named = pub.publish(topic, "named", options=ACK)
            named = await named
            await pub.publish(topic, SENTINEL, options=ACK)

            for k, sink in sinks.items():
                got, end = await until_sentinel(sink, timeout=DEADLINE)
                assert end == 3, (k, got)
                (args0, kwargs0, d0), (args1, _, d1) = sink.events[:2]
                assert_same(PAYLOAD_ARGS, args0, "{}.args".format(k))
                assert_same(PAYLOAD_KWARGS, kwargs0, "{}.kwargs".format(k))
                assert d0.publication == plain.id, (k, str(d0))
                assert (d0.publisher, d0.publisher_authid, d0.publisher_authrole) == \
                    (None, None, None), (k, str(d0))
                assert args1 == ["named"], (k, args1)
                assert d1.publication == named.id, (k, str(d1))
                assert d1.publisher == pub.session_id, (k, str(d1))
                assert d1.publisher_authid == pub.join_details.authid, (k, str(d1))
                assert d1.publisher_authrole == "anonymous", (k, str(d1))

            pub1 = await ha.open(transport, realm="realm.disclosed", name="pub-1",
                                 auth=ticket_auth(a, "pub-1"))
            await pub1.publish(topic, "x", options=ACK)
            (args, _, details), = await always_sink.wait_for(1, timeout=DEADLINE)
            assert args == ["x"]
            assert (details.publisher, details.publisher_authid, details.publisher_authrole) == \
                (pub1.session_id, "pub-1", "anonymous"), str(details)

    run(main(), timeout=TEST_TIMEOUT)


def test_node_killed_others_go_on(cluster, transport):
    """b is SIGKILLed with a subscriber joined: its session's connection drops, a and
    c notice within node_timeout_ms (cluster_nodes 1, b's interest gone from a), and
    events from a still reach c's subscriber, all of them, in order."""
    a, b, c = (cluster.nodes[n] for n in "abc")
    topic = "com.cluster.survive"

    async def main():
        async with Harness(a) as ha, Harness(b) as hb, Harness(c) as hc:
            sb = await hb.open(_rot(transport, 1), name="b")
            sc = await hc.open(_rot(transport, 2), name="c")
            sink_b, sink_c = EventSink(), EventSink()
            await sb.subscribe(sink_b.handler, topic, options=DETAILS)
            await sc.subscribe(sink_c.handler, topic, options=DETAILS)
            await wait_gauge(a, shard0("cluster_remote_interests"), 2)
            pub = await ha.open(transport, name="publisher")

            await _publish_numbered(pub, topic, 5)
            for k, sink in (("b", sink_b), ("c", sink_c)):
                got, _ = await until_sentinel(sink, timeout=DEADLINE)
                assert got == list(range(5)), (k, got)
            sent = metric(a, total("cluster_events_sent"))
            received = metric(c, total("cluster_events_received"))

            cluster.kill("b")
            await asyncio.wait_for(asyncio.shield(sb.disconnected), DEADLINE)
            for node in (a, c):
                await wait_gauge(node, shard0("cluster_nodes"), 1)
            await wait_gauge(a, shard0("cluster_remote_interests"), 1)

            start = len(sink_c.events)
            ids = await _publish_numbered(pub, topic, N)
            got, end = await until_sentinel(sink_c, start=start, timeout=DEADLINE)
            assert got == list(range(N)), got
            assert [e[2].publication for e in sink_c.events[start:end]] == ids
            await wait_metric(a, total("cluster_events_sent"), sent + N + 1)
            await wait_metric(c, total("cluster_events_received"), received + N + 1)
            for node in (a, c):
                assert metric(node, total("cluster_events_dropped")) == 0, node.cluster_node
            assert a.alive() and c.alive()

    run(main(), timeout=TEST_TIMEOUT)


async def _retained_on(h, transport, name):
    """The retained events a new session on h's node gets when it subscribes to
    com.cluster. (prefix, get_retained) -- those come before any live event -- up to a
    sentinel it then publishes itself to com.cluster.after (neither retained nor kept in
    history); the session is closed again."""
    s = await h.open(transport, name=name)
    sink = EventSink()
    await asyncio.wait_for(s.subscribe(sink.handler, "com.cluster.", options=SubscribeOptions(
        match="prefix", get_retained=True, details=True)), DEADLINE)
    await s.publish("com.cluster.after", SENTINEL,
                    options=PublishOptions(acknowledge=True, exclude_me=False))
    _, end = await until_sentinel(sink, timeout=DEADLINE)
    await s.close()
    return sink.events[:end - 1]


async def _history(meta, sub_id):
    """wamp.subscription.get_events for sub_id: (first argument, publication) of each."""
    events = await asyncio.wait_for(meta.call("wamp.subscription.get_events", sub_id), DEADLINE)
    return [(e["args"][0], e["publication"]) for e in events]


async def _history_until(meta, sub_id, n, deadline=DEADLINE):
    """Polls sub_id's history until it holds at least n events (a copy from another
    node is kept some time after the publisher's PUBLISHED); returns it."""
    end = time.monotonic() + deadline
    while True:
        got = await _history(meta, sub_id)
        if len(got) >= n:
            return got
        assert time.monotonic() < end, "{}: history of {} is {!r} after {} s, want {} events" \
            .format(meta.name, sub_id, got, deadline, n)
        await asyncio.sleep(0.02)


def test_kept_events_outlive_their_node(cluster, transport):
    """Retained events and event history are kept on every node (realm1's history rule
    com.cluster.kept.*, KEPT_RULE): a publisher on a publishes 0, 1, 2 with retain to
    com.cluster.kept.t; a subscriber on b gets them live once each; get_events on b (a
    subscription made before) and on c (one made after: c had no subscriber) returns
    the three in order with their publication ids, and a get_retained subscription on b
    and on c gets 2 (retained: true), once. a is SIGKILLed: b and c still serve both.
    a is started again, empty: it gets a copy from the others, each event once (its
    history exactly the three), and its retained event; a new retained publication on
    the new a reaches the history of every node once."""
    a, b, c = (cluster.nodes[n] for n in "abc")
    topic = KEPT_PREFIX + "t"
    keep = PublishOptions(acknowledge=True, retain=True)

    ids = []  # the publication ids of 0, 1, 2 (and 3)

    def check_retained(events, where):
        assert [e[0] for e in events] == [[2]], (where, events)
        (_, kwargs, details), = events
        assert kwargs == {}, (where, kwargs)
        assert details.retained is True, (where, str(details))
        assert details.topic == topic, (where, str(details))
        assert details.publication == ids[2], (where, str(details), ids)

    async def main():
        async with Harness(a) as ha, Harness(b) as hb, Harness(c) as hc:
            live = await hb.open(_rot(transport, 1), name="live-b")
            live_sink = EventSink()
            # prefix: the sentinel (com.cluster.after, not kept) reaches it too
            await live.subscribe(live_sink.handler, "com.cluster.",
                                 options=SubscribeOptions(match="prefix", details=True))
            reader_b = await hb.open(_rot(transport, 2), name="reader-b")
            sub_b = await reader_b.subscribe(lambda *args, **kwargs: None, topic)
            # b: the prefix entry and the exact one
            await wait_gauge(a, shard0("cluster_remote_interests"), 2)

            pub = await ha.open(transport, name="publisher-a")
            for i in range(3):
                ids.append((await asyncio.wait_for(pub.publish(topic, i, options=keep),
                                                   DEADLINE)).id)
            await pub.publish("com.cluster.after", SENTINEL, options=ACK)
            got, end = await until_sentinel(live_sink, timeout=DEADLINE)
            assert got == [0, 1, 2], got
            assert not any(e[2].retained for e in live_sink.events[:end]), live_sink.events
            want = list(zip(range(3), ids))

            assert await _history_until(reader_b, sub_b.id, 3) == want
            check_retained(await _retained_on(hb, _rot(transport, 1), "retained-b"), "b")
            reader_c = await hc.open(_rot(transport, 1), name="reader-c")
            sub_c = await reader_c.subscribe(lambda *args, **kwargs: None, topic)
            assert await _history_until(reader_c, sub_c.id, 3) == want
            check_retained(await _retained_on(hc, _rot(transport, 2), "retained-c"), "c")

            # the publisher's node dies
            cluster.kill("a")
            await asyncio.wait_for(asyncio.shield(pub.disconnected), DEADLINE)
            for node in (b, c):
                await wait_gauge(node, shard0("cluster_nodes"), 1)
            assert await _history(reader_b, sub_b.id) == want
            assert await _history(reader_c, sub_c.id) == want
            check_retained(await _retained_on(hb, transport, "retained-b-after"), "b after")
            check_retained(await _retained_on(hc, transport, "retained-c-after"), "c after")

            # a again, a new run with nothing kept: b (first by name) sends it a copy
            a2 = await asyncio.to_thread(cluster.restart, "a")
            for node in (a2, b, c):
                await wait_gauge(node, shard0("cluster_nodes"), 2)
            async with Harness(a2) as ha2:
                reader_a = await ha2.open(transport, name="reader-a2")
                sub_a = await reader_a.subscribe(lambda *args, **kwargs: None, topic)
                assert await _history_until(reader_a, sub_a.id, 3) == want  # each once
                check_retained(await _retained_on(ha2, _rot(transport, 1), "retained-a2"),
                               "a restarted")

                # kept on every node once, the new a's publications too
                pub2 = await ha2.open(_rot(transport, 2), name="publisher-a2")
                ids.append((await asyncio.wait_for(pub2.publish(topic, 3, options=keep),
                                                   DEADLINE)).id)
                want.append((3, ids[3]))
                for reader, sub in ((reader_a, sub_a), (reader_b, sub_b), (reader_c, sub_c)):
                    assert await _history_until(reader, sub.id, 4) == want, reader.name
            for node in (a2, b, c):
                assert metric(node, total("cluster_events_dropped")) == 0, node.cluster_node
            assert b.alive() and c.alive() and a2.alive()

    run(main(), timeout=TEST_TIMEOUT)


def test_subscription_meta_cross_nodes(cluster, transport):
    """Subscribers on b and on c to com.cluster.meta.x (exact), none on a: on a,
    wamp.subscription.lookup names the entry by the lowest of the two nodes' ids, b's and
    c's lookup by its own; wamp.subscription.get (with either node's id) gives the uri and
    the match policy; list_subscribers the two subscribers' session ids, count_subscribers
    2; match and list name the entry once."""
    a, b, c = (cluster.nodes[n] for n in "abc")
    topic = "com.cluster.meta.x"

    async def main():
        async with Harness(a) as ha, Harness(b) as hb, Harness(c) as hc:
            sb = await hb.open(_rot(transport, 1), name="sub-b")
            sc = await hc.open(_rot(transport, 2), name="sub-c")
            sub_b = await sb.subscribe(lambda *args, **kwargs: None, topic)
            sub_c = await sc.subscribe(lambda *args, **kwargs: None, topic)
            assert sub_b.id != sub_c.id, (sub_b.id, sub_c.id)
            await wait_gauge(a, shard0("cluster_remote_interests"), 2)
            for node in (b, c):
                await wait_gauge(node, shard0("cluster_remote_interests"), 1)

            meta = await ha.open(transport, name="meta-a")
            sid = await asyncio.wait_for(meta.call("wamp.subscription.lookup", topic), DEADLINE)
            assert sid == min(sub_b.id, sub_c.id), (sid, sub_b.id, sub_c.id)
            for h, own in ((hb, sub_b), (hc, sub_c)):
                m = await h.open(_rot(transport, 1), name="meta-" + h.router.cluster_node)
                got = await asyncio.wait_for(m.call("wamp.subscription.lookup", topic), DEADLINE)
                assert got == own.id, (h.router.cluster_node, got, own.id)

            for some_id in (sid, sub_b.id, sub_c.id):
                details = await asyncio.wait_for(meta.call("wamp.subscription.get", some_id),
                                                 DEADLINE)
                assert details["uri"] == topic, details
                assert details["match"] == "exact", details
                assert details["id"] == some_id, details
                subscribers = await asyncio.wait_for(
                    meta.call("wamp.subscription.list_subscribers", some_id), DEADLINE)
                assert sorted(subscribers) == sorted([sb.session_id, sc.session_id]), \
                    (some_id, subscribers, sb.session_id, sc.session_id)
                count = await asyncio.wait_for(
                    meta.call("wamp.subscription.count_subscribers", some_id), DEADLINE)
                assert count == 2, (some_id, count)

            matched = await asyncio.wait_for(meta.call("wamp.subscription.match", topic),
                                             DEADLINE)
            assert matched == [sid], matched
            listed = await asyncio.wait_for(meta.call("wamp.subscription.list"), DEADLINE)
            assert listed["exact"] == [sid], listed

            # a topic no node has: null
            none = await asyncio.wait_for(meta.call("wamp.subscription.lookup", topic + ".none"),
                                          DEADLINE)
            assert none is None, none

    run(main(), timeout=TEST_TIMEOUT)


def test_session_meta_spans_nodes(cluster, transport):
    """Two sessions on each of a, b, c (one on c a WAMP-Ticket login as carol): on a,
    wamp.session.count is the six (polled: another node's sessions are counted as its
    shards answer), wamp.session.list names the six, wamp.session.get of carol's session
    gives her details from c; a subscriber on c to wamp.session.on_join hears of a
    session joining on a (joiner, by WAMP-Ticket), once; wamp.session.kill from a of a
    session on b ends it there (its GOODBYE reason wamp.close.killed), and a counts one
    fewer and gets no_such_session for it. realm1's meta_admin_roles has "anonymous"."""
    a, b, c = (cluster.nodes[n] for n in "abc")

    async def count_until(meta, want, deadline=DEADLINE):
        end = time.monotonic() + deadline
        while True:
            got = await asyncio.wait_for(meta.call("wamp.session.count"), DEADLINE)
            if got == want:
                return
            assert time.monotonic() < end, "{}: wamp.session.count stayed at {} (want {})" \
                .format(meta.name, got, want)
            await asyncio.sleep(0.02)

    async def main():
        async with Harness(a) as ha, Harness(b) as hb, Harness(c) as hc:
            asker = await ha.open(transport, name="asker-a")
            other_a = await ha.open(_rot(transport, 1), name="other-a")
            victim = await hb.open(_rot(transport, 1), name="victim-b")
            other_b = await hb.open(_rot(transport, 2), name="other-b")
            carol = await hc.open(_rot(transport, 2), name="carol-c",
                                  auth=ticket_auth(c, "carol"))
            watcher = await hc.open(_rot(transport, 1), name="watcher-c")
            everyone = [asker, other_a, victim, other_b, carol, watcher]
            ids = sorted(s.session_id for s in everyone)
            assert len(set(ids)) == 6, ids

            await count_until(asker, 6)
            listed = await asyncio.wait_for(asker.call("wamp.session.list"), DEADLINE)
            assert sorted(listed) == ids, (listed, ids)
            assert carol.session_id in listed, listed
            got = await asyncio.wait_for(asker.call("wamp.session.get", carol.session_id),
                                         DEADLINE)
            assert got["session"] == carol.session_id, got
            assert got["authid"] == "carol", got
            assert got["authrole"] == "anonymous", got
            assert got["authmethod"] == "ticket", got
            kind = {"ws": "websocket", "rs": "rawsocket"}[carol.spec.kind]
            assert got["transport"]["type"] == kind, got
            assert got["transport"]["serializer"] == carol.spec.serializer, got
            # one of b's: the ID of a session on another node than c's
            got = await asyncio.wait_for(asker.call("wamp.session.get", other_b.session_id),
                                         DEADLINE)
            assert got["session"] == other_b.session_id, got
            assert got["authid"] == other_b.join_details.authid, got

            # on_join on c of a session on a
            joins = EventSink()
            await watcher.subscribe(joins.handler, "wamp.session.on_join")
            await wait_gauge(a, shard0("cluster_remote_interests"), 1)
            joiner = await ha.open(_rot(transport, 2), name="joiner-a",
                                   auth=ticket_auth(a, "joiner"))

            def joined():
                return [e[0][0] for e in joins.events if e[0][0]["session"] == joiner.session_id]

            (info,) = await wait_until(joined, "on_join of joiner-a on c")
            assert info["authid"] == "joiner", info
            assert info["authrole"] == "anonymous", info
            assert info["authmethod"] == "ticket", info
            await count_until(asker, 7)

            # kill on another node
            vid = victim.session_id  # autobahn forgets it on leave
            res = await asyncio.wait_for(asker.call("wamp.session.kill", vid), DEADLINE)
            assert res is None, res
            details = await asyncio.wait_for(asyncio.shield(victim.left), DEADLINE)
            assert details.reason == "wamp.close.killed", str(details)
            await asyncio.wait_for(asyncio.shield(victim.disconnected), DEADLINE)
            assert not victim.is_attached()
            await count_until(asker, 6)
            err = await expect_app_error(asker.call("wamp.session.get", vid), DEADLINE)
            assert err.error == "wamp.error.no_such_session", err
            assert all(s.is_attached() for s in everyone if s is not victim)
            assert len(joined()) == 1, joins.events

    run(main(), timeout=TEST_TIMEOUT)


# ---------------------------------------------------------------------------
# RPC across nodes

async def callees_known(meta, procedure):
    """How many callees of procedure (exact registration) the node of the session meta
    knows, its own and the other nodes' (wamp.registration.lookup, then
    wamp.registration.count_callees): 0 when it knows no registration."""
    reg = await meta.call("wamp.registration.lookup", procedure)
    if reg is None:
        return 0
    try:
        return await meta.call("wamp.registration.count_callees", reg)
    except ApplicationError as e:
        if e.error == "wamp.error.no_such_registration":  # gone in between
            return 0
        raise


async def wait_callees(metas, procedure, n, deadline=DEADLINE):
    """Polls until the node of each session of metas knows n callees of procedure."""
    end = time.monotonic() + deadline
    for meta in metas:
        while True:
            got = await callees_known(meta, procedure)
            if got == n:
                break
            assert time.monotonic() < end, "{}: {} callees of {} after {} s, want {}".format(
                meta.name, got, procedure, deadline, n)
            await asyncio.sleep(0.02)


async def wait_until(probe, what, deadline=DEADLINE):
    """Polls probe() (no I/O of its own) until it returns something true; returns it."""
    end = time.monotonic() + deadline
    while True:
        got = probe()
        if got:
            return got
        assert time.monotonic() < end, "no {} within {} s".format(what, deadline)
        await asyncio.sleep(0.01)


def spy(session):
    """The messages session receives from now on, as autobahn parsed them (a list
    that grows as they come)."""
    seen = []
    deliver = session.onMessage

    def tap(msg):
        seen.append(msg)
        return deliver(msg)

    session.onMessage = tap
    return seen


def cancel_mode(session, mode):
    """The CANCELs session sends from now on without a mode ask for mode:
    autobahn-python 24.4 sends CANCEL without Options.mode (skip) when a call's future
    is cancelled, and has no option for it."""
    transport = session._transport
    send = transport.send

    def send_with_mode(msg):
        if isinstance(msg, message.Cancel) and msg.mode is None:
            msg.mode = mode
        return send(msg)

    transport.send = send_with_mode


def request_of(session, call):
    """The request id of call, a future session.call() returned."""
    ids = [r for r, req in session._call_reqs.items() if req.on_reply is call]
    assert len(ids) == 1, ids
    return ids[0]


def test_calls_cross_nodes(cluster, transport):
    """A callee on b, a caller on a: positional and keyword arguments (the payload
    fixtures) reach the callee and its result the caller, exact across serializers; an
    ApplicationError raised by the callee reaches the caller with its URI, args and
    kwargs; a second single registration on c is refused (procedure_already_exists);
    the callee's UNREGISTER reaches a and c, and a's next call gets no_such_procedure."""
    a, b, c = (cluster.nodes[n] for n in "abc")
    proc = "com.cluster.rpc.echo"

    async def main():
        async with Harness(a) as ha, Harness(b) as hb, Harness(c) as hc:
            callee = await hb.open(_rot(transport, 1), name="callee-b")
            invocations = []

            def echo(*args, details=None, **kwargs):
                invocations.append((list(args), kwargs, details))
                return CallResult(*args, **kwargs)

            def fail(*args, details=None, **kwargs):
                raise ApplicationError("com.cluster.rpc.failed", "on b", len(args), why="asked",
                                       got=kwargs)

            opts = RegisterOptions(details_arg="details")
            reg = await callee.register(echo, proc, options=opts)
            await callee.register(fail, proc + ".fail", options=opts)
            meta_a = await ha.open(_rot(transport, 2), name="meta-a")
            meta_c = await hc.open(_rot(transport, 2), name="meta-c")
            await wait_callees([meta_a, meta_c], proc, 1)
            await wait_callees([meta_a], proc + ".fail", 1)

            caller = await ha.open(transport, name="caller-a")
            res = await asyncio.wait_for(caller.call(proc, *PAYLOAD_ARGS, **PAYLOAD_KWARGS),
                                         DEADLINE)
            args, kwargs = normalize_result(res)
            assert_same(PAYLOAD_ARGS, args, "result.args")
            assert_same(PAYLOAD_KWARGS, kwargs, "result.kwargs")
            (in_args, in_kwargs, details), = invocations
            assert_same(PAYLOAD_ARGS, in_args, "invocation.args")
            assert_same(PAYLOAD_KWARGS, in_kwargs, "invocation.kwargs")
            assert details.registration.id == reg.id, str(details)
            assert details.caller is None, str(details)  # not disclosed

            res = await asyncio.wait_for(caller.call(proc, only="kwargs"), DEADLINE)
            assert normalize_result(res) == ([], {"only": "kwargs"}), res
            res = await asyncio.wait_for(caller.call(proc, "one"), DEADLINE)
            assert res == "one", res

            err = await expect_app_error(caller.call(proc + ".fail", 1, 2, k="v"), DEADLINE)
            assert err.error == "com.cluster.rpc.failed", err
            assert list(err.args) == ["on b", 2], err.args
            assert err.kwargs == {"why": "asked", "got": {"k": "v"}}, err.kwargs

            # one single registration cluster-wide
            twin = await hc.open(transport, name="twin-c")
            with pytest.raises(ApplicationError) as refused:
                await asyncio.wait_for(twin.register(lambda: "twin", proc), DEADLINE)
            assert refused.value.error == "wamp.error.procedure_already_exists", refused.value

            await asyncio.wait_for(reg.unregister(), DEADLINE)
            await wait_callees([meta_a, meta_c], proc, 0)
            err = await expect_app_error(caller.call(proc, "gone"), DEADLINE)
            assert err.error == "wamp.error.no_such_procedure", err
            assert len(invocations) == 3, invocations

    run(main(), timeout=TEST_TIMEOUT)


def test_progressive_results_cross_nodes(cluster, transport):
    """A callee on c sends progressive results (details.progress), a caller on a
    receives them (CallOptions(on_progress=)): every chunk in order, each before the
    final result, then that; two such calls at once each get their own chunks; a call
    without on_progress gets the final result only."""
    a, c = cluster.nodes["a"], cluster.nodes["c"]
    proc = "com.cluster.rpc.chunks"

    async def main():
        async with Harness(a) as ha, Harness(c) as hc:
            callee = await hc.open(_rot(transport, 1), name="callee-c")

            async def chunks(tag, n, details=None):
                if details.progress is None:
                    return "no progress asked for"
                for i in range(n):
                    details.progress(tag, i, chunk="#" * i)
                    if i % 4 == 3:
                        await asyncio.sleep(0)  # a few at once, then a turn of the loop
                return CallResult("done", tag, n=n)

            await callee.register(chunks, proc, options=RegisterOptions(details_arg="details"))
            meta = await ha.open(_rot(transport, 2), name="meta-a")
            await wait_callees([meta], proc, 1)

            caller = await ha.open(transport, name="caller-a")
            calls = {}
            got = {"x": [], "y": []}

            def on_progress(tag):
                def record(*args, **kwargs):
                    got[tag].append((list(args), kwargs, calls[tag].done()))
                return record

            sizes = {"x": 40, "y": 7}
            for tag, n in sizes.items():
                calls[tag] = caller.call(proc, tag, n,
                                         options=CallOptions(on_progress=on_progress(tag)))
            results = await asyncio.wait_for(asyncio.gather(*calls.values()), DEADLINE)
            for (tag, n), res in zip(sizes.items(), results):
                assert got[tag] == [([tag, i], {"chunk": "#" * i}, False) for i in range(n)], \
                    (tag, got[tag])
                assert normalize_result(res) == (["done", tag], {"n": n}), (tag, res)

            res = await asyncio.wait_for(caller.call(proc, "z", 3), DEADLINE)
            assert res == "no progress asked for", res

    run(main(), timeout=TEST_TIMEOUT)


def test_cancel_cross_nodes(cluster, transport):
    """A call from a to a callee on b, canceled by the caller while the callee works
    on it. kill (the call's future cancelled, its CANCEL given mode kill): the callee
    gets INTERRUPT mode kill (autobahn cancels its coroutine), and its own ERROR
    (wamp.error.canceled, with its args) is what reaches the caller; the future ends
    cancelled. killnowait (CANCEL sent as is): the caller's call fails at once with
    ApplicationError wamp.error.canceled, the callee is interrupted too, and its late
    answer never reaches the caller."""
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    proc = "com.cluster.rpc.long"

    async def main():
        async with Harness(a) as ha, Harness(b) as hb:
            callee = await hb.open(_rot(transport, 1), name="callee-b")
            callee_seen = spy(callee)
            invoked = asyncio.Queue()
            interrupted = []

            async def long(tag):
                invoked.put_nowait(tag)
                try:
                    await asyncio.Event().wait()  # never set: only an INTERRUPT ends it
                except asyncio.CancelledError:
                    interrupted.append(tag)
                    raise ApplicationError("wamp.error.canceled", "interrupted on b", tag)
                return "not interrupted"

            await callee.register(long, proc)
            await callee.register(lambda: "quick", proc + ".quick")
            meta = await ha.open(_rot(transport, 2), name="meta-a")
            await wait_callees([meta], proc, 1)
            await wait_callees([meta], proc + ".quick", 1)
            caller = await ha.open(transport, name="caller-a")
            caller_seen = spy(caller)
            cancel_mode(caller, "kill")

            def errors_for(req):
                return [m for m in caller_seen if isinstance(m, message.Error) and m.request == req]

            def interrupts():
                return [m for m in callee_seen if isinstance(m, message.Interrupt)]

            # kill
            call = caller.call(proc, "kill")
            killed = req = request_of(caller, call)
            assert await asyncio.wait_for(invoked.get(), DEADLINE) == "kill"
            call.cancel()  # autobahn sends CANCEL, here with mode kill
            with pytest.raises(asyncio.CancelledError):
                await call
            (err,) = await wait_until(lambda: errors_for(req), "ERROR for the canceled call")
            assert err.error == "wamp.error.canceled", err
            assert err.request_type == message.Call.MESSAGE_TYPE, err
            # the callee's ERROR, not one of the router's own
            assert err.args == ["interrupted on b", "kill"], err
            assert interrupted == ["kill"], interrupted
            (interrupt,) = interrupts()
            assert interrupt.mode == "kill", interrupt

            # killnowait, the call's future left as it is
            call = caller.call(proc, "killnowait")
            req = request_of(caller, call)
            assert await asyncio.wait_for(invoked.get(), DEADLINE) == "killnowait"
            caller._transport.send(message.Cancel(req, mode="killnowait"))
            err = await expect_app_error(call, DEADLINE)
            assert err.error == "wamp.error.canceled", err
            await wait_until(lambda: len(interrupted) == 2, "INTERRUPT of the second call")
            assert interrupted == ["kill", "killnowait"], interrupted
            assert [m.mode for m in interrupts()] == ["kill", "killnowait"], interrupts()
            # the callee has answered (its ERROR is sent before autobahn forgets the
            # invocation); a call after it on the same paths comes back, and by then
            # a late answer to the canceled call would have too
            await wait_until(lambda: not callee._invocations, "the callee's answer")
            assert await asyncio.wait_for(caller.call(proc + ".quick"), DEADLINE) == "quick"
            for r in (killed, req):
                assert len(errors_for(r)) == 1, (r, errors_for(r))
                assert not [m for m in caller_seen if isinstance(m, message.Result)
                            and m.request == r], (r, caller_seen)
            assert not caller._call_reqs, caller._call_reqs

    run(main(), timeout=TEST_TIMEOUT)


def test_call_timeout_cross_nodes(cluster, transport):
    """A call from a with a dealer-side timeout (CallOptions(timeout=300): WAMP's
    Options.timeout is in milliseconds, and autobahn sends the number as it is) to a
    callee on c that never answers: ApplicationError wamp.error.timeout, not before
    300 ms; the callee got the invocation and is interrupted (killnowait); a call with
    a timeout that is answered in time is answered."""
    a, c = cluster.nodes["a"], cluster.nodes["c"]
    proc = "com.cluster.rpc.never"

    async def main():
        async with Harness(a) as ha, Harness(c) as hc:
            callee = await hc.open(_rot(transport, 1), name="callee-c")
            callee_seen = spy(callee)
            invoked, interrupted = [], []

            async def never():
                invoked.append(time.monotonic())
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    interrupted.append(time.monotonic())
                    raise
                return "answered"

            await callee.register(never, proc)
            await callee.register(lambda: "quick", proc + ".quick")
            meta = await ha.open(_rot(transport, 2), name="meta-a")
            await wait_callees([meta], proc, 1)
            await wait_callees([meta], proc + ".quick", 1)
            caller = await ha.open(transport, name="caller-a")

            start = time.monotonic()
            err = await expect_app_error(caller.call(proc, options=CallOptions(timeout=300)),
                                         DEADLINE)
            took = time.monotonic() - start
            assert err.error == "wamp.error.timeout", err
            assert took >= 0.29, took
            assert len(invoked) == 1, invoked
            await wait_until(lambda: interrupted, "INTERRUPT of the timed-out invocation")
            modes = [m.mode for m in callee_seen if isinstance(m, message.Interrupt)]
            assert modes == ["killnowait"], modes

            res = await asyncio.wait_for(
                caller.call(proc + ".quick", options=CallOptions(timeout=5000)), DEADLINE)
            assert res == "quick", res
            assert not caller._call_reqs, caller._call_reqs

    run(main(), timeout=TEST_TIMEOUT)


def _recorder(calls):
    """answerer(name): a procedure that records its argument in calls[name] and
    answers with name."""
    def answerer(name):
        def answer(i):
            calls[name].append(i)
            return name
        return answer
    return answerer


def test_shared_roundrobin_spans_nodes(cluster, transport):
    """A shared registration (invoke = roundrobin) with one callee on each of a, b, c,
    registered in that order, each once every node knows the one before: six calls
    from b are answered by a, b, c, a, b, c, each callee naming itself."""
    hs_nodes = cluster.nodes
    proc = "com.cluster.rpc.rr"

    async def main():
        async with Harness(hs_nodes["a"]) as ha, Harness(hs_nodes["b"]) as hb, \
                Harness(hs_nodes["c"]) as hc:
            harnesses = {"a": ha, "b": hb, "c": hc}
            metas = [await h.open(_rot(transport, 2), name="meta-" + n)
                     for n, h in harnesses.items()]
            calls = {n: [] for n in harnesses}

            answerer = _recorder(calls)
            for k, (name, h) in enumerate(harnesses.items()):
                callee = await h.open(_rot(transport, k), name="callee-" + name)
                await asyncio.wait_for(callee.register(
                    answerer(name), proc, options=RegisterOptions(invoke="roundrobin")), DEADLINE)
                await wait_callees(metas, proc, k + 1)

            caller = await hb.open(transport, name="caller-b")
            got = [await asyncio.wait_for(caller.call(proc, i), DEADLINE) for i in range(6)]
            assert got == ["a", "b", "c", "a", "b", "c"], got
            assert calls == {"a": [0, 3], "b": [1, 4], "c": [2, 5]}, calls

    run(main(), timeout=TEST_TIMEOUT)


async def _shared_callees(harnesses, metas, transport, proc, invoke, answer):
    """One callee of proc (a shared registration, invoke policy) on each node of
    harnesses, registered in that order, each once every node knows the one before;
    answer(name) is the endpoint of node name's callee. Returns {name: (callee session,
    its registration)}."""
    callees = {}
    for k, (name, h) in enumerate(harnesses.items()):
        callee = await h.open(_rot(transport, k), name="callee-" + name)
        reg = await asyncio.wait_for(callee.register(
            answer(name), proc, options=RegisterOptions(invoke=invoke)), DEADLINE)
        await wait_callees(metas, proc, k + 1)
        callees[name] = (callee, reg)
    return callees


def test_shared_random_spans_nodes(cluster, transport):
    """A shared registration (invoke = random) with one callee on each of a, b, c: 60
    calls from a, all at once, are all answered, each by one callee, and each node's
    callee gets at least one. (Each call goes to each callee with probability 1/3: that
    one of the three gets none has probability below 3 * (2/3)^60, about 1e-10.)"""
    proc = "com.cluster.rpc.random"
    n = 60

    async def main():
        async with Harness(cluster.nodes["a"]) as ha, Harness(cluster.nodes["b"]) as hb, \
                Harness(cluster.nodes["c"]) as hc:
            harnesses = {"a": ha, "b": hb, "c": hc}
            metas = [await h.open(_rot(transport, 2), name="meta-" + k)
                     for k, h in harnesses.items()]
            calls = {k: [] for k in harnesses}

            answerer = _recorder(calls)
            await _shared_callees(harnesses, metas, transport, proc, "random", answerer)
            caller = await ha.open(transport, name="caller-a")
            got = await asyncio.wait_for(
                asyncio.gather(*(caller.call(proc, i) for i in range(n))), DEADLINE)
            assert sorted(i for l in calls.values() for i in l) == list(range(n)), calls
            for i, who in enumerate(got):
                assert i in calls[who], (i, who, calls)
            assert all(calls[k] for k in harnesses), {k: len(v) for k, v in calls.items()}

    run(main(), timeout=TEST_TIMEOUT)


def test_shared_last_spans_nodes(cluster, transport):
    """A shared registration (invoke = last) with one callee on each of a, b, c,
    registered in that order: calls from a go to c's callee, the last registered; once
    c's callee unregisters (and every node knows it), to b's; once b's session leaves,
    to a's."""
    proc = "com.cluster.rpc.last"

    async def main():
        async with Harness(cluster.nodes["a"]) as ha, Harness(cluster.nodes["b"]) as hb, \
                Harness(cluster.nodes["c"]) as hc:
            harnesses = {"a": ha, "b": hb, "c": hc}
            metas = [await h.open(_rot(transport, 2), name="meta-" + k)
                     for k, h in harnesses.items()]
            calls = {k: [] for k in harnesses}

            answerer = _recorder(calls)
            callees = await _shared_callees(harnesses, metas, transport, proc, "last",
                                            answerer)
            caller = await ha.open(transport, name="caller-a")

            async def four(first):
                return [await asyncio.wait_for(caller.call(proc, i), DEADLINE)
                        for i in range(first, first + 4)]

            assert await four(0) == ["c"] * 4
            assert calls == {"a": [], "b": [], "c": [0, 1, 2, 3]}, calls

            await asyncio.wait_for(callees["c"][1].unregister(), DEADLINE)
            await wait_callees(metas, proc, 2)
            assert await four(4) == ["b"] * 4
            assert calls == {"a": [], "b": [4, 5, 6, 7], "c": [0, 1, 2, 3]}, calls

            await callees["b"][0].close()
            await wait_callees(metas, proc, 1)
            assert await four(8) == ["a"] * 4
            assert calls == {"a": [8, 9, 10, 11], "b": [4, 5, 6, 7], "c": [0, 1, 2, 3]}, calls
            assert callees["c"][0].is_attached()  # unregistered, not gone
            assert not caller._call_reqs, caller._call_reqs

    run(main(), timeout=TEST_TIMEOUT)


def test_unavailable_callee_reroutes_across_nodes(cluster, transport):
    """A shared registration (invoke = first) with callees on a, b, c, registered in that
    order, called from c. A callee that answers ERROR wamp.error.unavailable passes the
    call back to the caller's node, which gives it to the next callee by the policy (for
    first: the next one registered after, dealer.rs pick_excluding): a declines, b
    answers; with b declining too, c answers; with all three declining the caller gets
    wamp.error.no_available_callee. Each callee is asked once per call, and c counts
    each reroute (calls_rerouted: 1 + 2 + 2)."""
    proc = "com.cluster.rpc.reroute"
    c = cluster.nodes["c"]

    async def main():
        async with Harness(cluster.nodes["a"]) as ha, Harness(cluster.nodes["b"]) as hb, \
                Harness(c) as hc:
            harnesses = {"a": ha, "b": hb, "c": hc}
            metas = [await h.open(_rot(transport, 2), name="meta-" + k)
                     for k, h in harnesses.items()]
            asked = {k: [] for k in harnesses}
            declines = {"a"}

            def answerer(name):
                def answer(i):
                    asked[name].append(i)
                    if name in declines:
                        raise ApplicationError("wamp.error.unavailable", "busy on " + name)
                    return name
                return answer

            await _shared_callees(harnesses, metas, transport, proc, "first", answerer)
            caller = await hc.open(transport, name="caller-c")
            rerouted = metric(c, total("calls_rerouted"))

            assert await asyncio.wait_for(caller.call(proc, 0), DEADLINE) == "b"
            assert asked == {"a": [0], "b": [0], "c": []}, asked
            declines.add("b")
            assert await asyncio.wait_for(caller.call(proc, 1), DEADLINE) == "c"
            assert asked == {"a": [0, 1], "b": [0, 1], "c": [1]}, asked
            declines.add("c")
            err = await expect_app_error(caller.call(proc, 2), DEADLINE)
            assert err.error == "wamp.error.no_available_callee", err
            assert asked == {"a": [0, 1, 2], "b": [0, 1, 2], "c": [1, 2]}, asked
            await wait_metric(c, total("calls_rerouted"), rerouted + 5)
            assert not caller._call_reqs, caller._call_reqs

    run(main(), timeout=TEST_TIMEOUT)


def test_callee_node_killed_calls_canceled(cluster, transport):
    """c is SIGKILLed with calls from a and from b pending on its callee: both callers
    get ApplicationError wamp.error.canceled within the node timeout (plus a second for
    a loaded machine); a and b forget c's callee, a call then gets no_such_procedure,
    and a single registration of the procedure on a is accepted and called from b."""
    a, b, c = (cluster.nodes[n] for n in "abc")
    proc = "com.cluster.rpc.doomed"

    async def main():
        async with Harness(a) as ha, Harness(b) as hb, Harness(c) as hc:
            callee = await hc.open(_rot(transport, 1), name="callee-c")
            invoked = []

            async def hang(who):
                invoked.append(who)
                await asyncio.Event().wait()

            await callee.register(hang, proc)
            meta_a = await ha.open(_rot(transport, 2), name="meta-a")
            meta_b = await hb.open(_rot(transport, 2), name="meta-b")
            await wait_callees([meta_a, meta_b], proc, 1)
            callers = {"a": await ha.open(transport, name="caller-a"),
                       "b": await hb.open(_rot(transport, 1), name="caller-b")}
            pending = {k: s.call(proc, k) for k, s in callers.items()}
            await wait_until(lambda: sorted(invoked) == ["a", "b"], "both invocations on c")

            ended = {}
            for k, fut in pending.items():
                fut.add_done_callback(lambda _, k=k: ended.setdefault(k, time.monotonic()))
            killed = time.monotonic()
            cluster.kill("c")
            for k, fut in pending.items():
                err = await expect_app_error(fut, DEADLINE)
                assert err.error == "wamp.error.canceled", (k, err)
            took = {k: round(t - killed, 3) for k, t in ended.items()}
            bound = NODE_TIMEOUT_MS / 1000 + 1.0
            assert all(t <= bound for t in took.values()), (took, bound)

            await wait_callees([meta_a, meta_b], proc, 0)
            err = await expect_app_error(callers["a"].call(proc, "again"), DEADLINE)
            assert err.error == "wamp.error.no_such_procedure", err
            heir = await ha.open(_rot(transport, 1), name="heir-a")
            await asyncio.wait_for(heir.register(lambda who: "heir " + who, proc), DEADLINE)
            await wait_callees([meta_b], proc, 1)
            assert await asyncio.wait_for(callers["b"].call(proc, "b"), DEADLINE) == "heir b"
            assert a.alive() and b.alive()

    run(main(), timeout=TEST_TIMEOUT)



# ---------------------------------------------------------------------------
# NATS outage

def test_nats_restart_nodes_rejoin(cluster, transport):
    """nats-server stopped and started again on its port. Before: a subscriber on b
    gets events from a publisher on a, and a caller on c calls a callee on b. With
    NATS down the nodes lose each other within node_timeout_ms (cluster_nodes 0, no
    remote interests), and a tells wamp.session.on_leave of b's sessions, which stay
    joined to b; each node serves its own sessions: a publisher on b (joining then)
    reaches the subscriber on b, a caller on a a callee on a. NATS back: every node
    connects again (cluster_nats_connects 2), sees the two others and takes their
    interests and sessions again (each node announces all of its own, those made while
    NATS was down too); the same sessions as before
    carry on: 50 events and a sentinel from the publisher on a reach the subscriber on
    b once each, in order, and the caller on c reaches the callee on b."""
    a, b, c = (cluster.nodes[n] for n in "abc")
    nodes = {"a": a, "b": b, "c": c}
    topic = "com.cluster.outage.t"
    on_a, on_b = "com.cluster.outage.on_a", "com.cluster.outage.on_b"
    # b: the subscription and a callee; a: a callee and the on_leave subscription
    interests = {"a": 2, "b": 2, "c": 4}

    async def main():
        async with Harness(a) as ha, Harness(b) as hb, Harness(c) as hc:
            sub = await hb.open(_rot(transport, 1), name="sub-b")
            sink = EventSink()
            await sub.subscribe(sink.handler, topic, options=DETAILS)
            callee_b = await hb.open(_rot(transport, 2), name="callee-b")
            await callee_b.register(lambda who: "b for " + who, on_b)
            callee_a = await ha.open(_rot(transport, 1), name="callee-a")
            await callee_a.register(lambda who: "a for " + who, on_a)
            watcher = await ha.open(_rot(transport, 2), name="watcher-a")
            leaves = EventSink()
            await watcher.subscribe(leaves.handler, "wamp.session.on_leave")
            for n, want in interests.items():
                await wait_gauge(nodes[n], shard0("cluster_remote_interests"), want)
            meta_c = await hc.open(_rot(transport, 1), name="meta-c")
            await wait_callees([meta_c], on_b, 1)
            caller_c = await hc.open(_rot(transport, 2), name="caller-c")
            caller_a = await ha.open(_rot(transport, 2), name="caller-a")
            pub = await ha.open(transport, name="publisher-a")

            assert await asyncio.wait_for(caller_c.call(on_b, "c"), DEADLINE) == "b for c"
            await _publish_numbered(pub, topic, 5)
            got, mark = await until_sentinel(sink, timeout=DEADLINE)
            assert got == list(range(5)), got
            for n, node in nodes.items():
                assert metric(node, shard0("cluster_nats_connects")) == 1, n

            # NATS goes: the nodes lose each other
            await asyncio.to_thread(cluster.stop_nats)
            for node in nodes.values():
                await wait_gauge(node, shard0("cluster_nodes"), 0)
            for node in nodes.values():
                await wait_gauge(node, shard0("cluster_remote_interests"), 0)
            await wait_until(lambda: [e for e in leaves.events if e[0][:1] == [sub.session_id]],
                             "a's on_leave of b's subscriber")
            await wait_until(lambda: [e for e in leaves.events
                                      if e[0][:1] == [callee_b.session_id]],
                             "a's on_leave of b's callee")
            # a's own sessions are not among them
            mine = {s.session_id for s in (callee_a, watcher, caller_a, pub)}
            assert not [e for e in leaves.events if e[0][:1] and e[0][0] in mine], leaves.events

            # each node serves its own sessions
            local_pub = await hb.open(_rot(transport, 2), name="publisher-b")
            await _publish_numbered(local_pub, topic, 5)
            got, mark = await until_sentinel(sink, start=mark, timeout=DEADLINE)
            assert got == list(range(5)), got
            assert await asyncio.wait_for(caller_a.call(on_a, "a"), DEADLINE) == "a for a"
            for s in (sub, callee_b, callee_a, watcher, meta_c, caller_c, caller_a, pub):
                assert s.is_attached(), s.name

            # NATS back on its port: every node rejoins, interests announced again
            await asyncio.to_thread(cluster.start_nats, cluster.nats_port)
            for node in nodes.values():
                await wait_metric(node, shard0("cluster_nats_connects"), 2)
            for node in nodes.values():
                await wait_gauge(node, shard0("cluster_nodes"), 2)
            for n, want in interests.items():
                await wait_gauge(nodes[n], shard0("cluster_remote_interests"), want)
            # and the sessions: a has 4, b 3 (publisher-b joined while NATS was down), c 2
            for n, want in {"a": 5, "b": 6, "c": 7}.items():
                await wait_gauge(nodes[n], shard0("cluster_remote_sessions"), want)
            await wait_callees([meta_c], on_b, 1)

            # the sessions from before carry on across nodes
            ids = await _publish_numbered(pub, topic, N)
            got, end = await until_sentinel(sink, start=mark, timeout=DEADLINE)
            assert got == list(range(N)), got
            assert [e[2].publication for e in sink.events[mark:end]] == ids
            assert await asyncio.wait_for(caller_c.call(on_b, "c"), DEADLINE) == "b for c"
            assert await asyncio.wait_for(caller_c.call(on_a, "c"), DEADLINE) == "a for c"
            for n, node in nodes.items():
                assert metric(node, total("cluster_events_dropped")) == 0, n
                assert node.alive(), n

    run(main(), timeout=TEST_TIMEOUT)

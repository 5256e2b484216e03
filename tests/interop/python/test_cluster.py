"""A cluster of three Switchyard nodes over NATS ([cluster]), with autobahn-python clients.

Each test gets a nats-server of its own on a free 127.0.0.1 port and three router
nodes joined to it as cluster "c1": a (1 shard), b (2 shards), c (1 shard), each
with the default config of conftest (conftest._start_router) plus a [cluster]
section (heartbeat 100 ms, node timeout 1 s). The fixture waits until every node
sees the two others (switchyard_cluster_nodes{shard="0"} == 2).

Interest crosses nodes asynchronously, so before publishing a test waits until the
publishing node knows the subscriptions of the others: its
switchyard_cluster_remote_interests{shard="0"} (one entry per realm, match policy and
URI per other node, however many subscribers) reaches the count expected.

The publisher is on node a over the test's transport; the subscribers on b and c use
the others too (cross-serializer across nodes). An event that must not be there is
shown by a later sentinel from the same publisher (one publisher's events reach a
subscriber in publication order) and by the nodes' counters, never by waiting.

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
from autobahn.wamp.types import PublishOptions, SubscribeOptions

from harness import (PAYLOAD_ARGS, PAYLOAD_KWARGS, SENTINEL, TRANSPORTS, EventSink, Harness,
                     assert_same, disclosing, run, ticket_auth, until_sentinel)


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

    def start_nats(self):
        self.nats_port = conftest._free_port()
        with open(self.nats_log, "wb") as log:
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

    def start_node(self, name, shards):
        workdir = self.workdir / name
        workdir.mkdir()
        extra = CLUSTER_CONFIG.format(port=self.nats_port, node=name, heartbeat=HEARTBEAT_MS,
                                      timeout=NODE_TIMEOUT_MS)
        node = conftest._start_router(shards, workdir, extra_config=extra)
        node.cluster_node = name
        self.nodes[name] = node
        return node

    def kill(self, name):
        """SIGKILL, as a crash would."""
        node = self.nodes[name]
        self.killed.add(name)
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(timeout=DEADLINE)
        assert node.proc.returncode == -signal.SIGKILL, node.proc.returncode

    def logs(self):
        parts = []
        for name, node in self.nodes.items():
            parts.append("--- node {} ({} shards{}) stderr: {} ---\n{}".format(
                name, node.shards, ", SIGKILLed" if name in self.killed else "",
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

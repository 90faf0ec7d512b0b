#!/usr/bin/env python3
"""An independent HTTP/2 (and HTTP/1.1) client for the proxy's tests, built on the `h2`
package from PyPI (the sans-IO HTTP/2 state machine under httpx and hyper-h2 servers) and
Python's ssl module. Talks to backend.py through the proxy.

Usage: h2client.py MODE --port P [--ca CA --cert CERT --key KEY | --plain] [options]

Modes (each exits 0 and prints one JSON line when every check held, else exits 1 saying
which request failed and why):
  sequential N     N requests one after another on one connection
  soak N M         N sequential, then M more in interleaved bursts of 1-16 streams
                   (GETs of several sizes and POSTs with bodies), every body checked
  flow             a 20 MB upload; a 20 MB download read slowly; one stream stalled on
                   its flow-control window while another is answered
  rst              the client resets a stream mid-download; the backend cuts a body
                   short (the stream must be reset, not ended); the connection serves on
  concurrent N     N streams open at once
  headers          large and repeated request headers (HPACK), large response headers,
                   identity headers replaced
  trailers         response trailers from a chunked backend body
  h1soak N         N sequential HTTP/1.1 keep-alive requests on one connection
  request M P      one HTTP/2 request, method M, :path P exactly as given (--header
                   NAME:VALUE adds a header; --authority sets :authority): prints the
                   status and the body
Every request has its own deadline (--deadline, 5 s).
"""
import argparse
import hashlib
import http.client
import json
import os
import random
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions

PATTERN = bytes(range(256)) * 4096


def pattern(n):
    out = bytearray()
    while len(out) < n:
        out += PATTERN[: n - len(out)]
    return bytes(out)


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def connect(args, alpn):
    sock = socket.create_connection(("127.0.0.1", args.port), timeout=args.deadline)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if args.plain:
        return sock
    ctx = ssl.create_default_context(cafile=args.ca)
    ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protocols(alpn)
    tls = ctx.wrap_socket(sock, server_hostname="localhost")
    if alpn == ["h2"]:
        check(tls.selected_alpn_protocol() == "h2", f"ALPN gave {tls.selected_alpn_protocol()!r}")
    return tls


class Stream:
    def __init__(self, sid, path):
        self.sid = sid
        self.path = path
        self.headers = None
        self.data = bytearray()
        self.trailers = None
        self.ended = False
        self.reset = None
        self.unacked = 0
        self.started = time.monotonic()


class H2:
    def __init__(self, args):
        self.args = args
        self.sock = connect(args, ["h2"])
        # `request` sends what an attacker would: no client-side header validation
        cfg = h2.config.H2Configuration(
            client_side=True,
            header_encoding="utf-8",
            validate_outbound_headers=args.mode != "request",
            normalize_outbound_headers=args.mode != "request",
        )
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        self.streams = {}
        self.goaway = None
        self.auto_ack = True
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path, method="GET", headers=(), body=None, trailers=None):
        sid = self.conn.get_next_available_stream_id()
        hdrs = [
            (":method", method),
            (":scheme", "https"),
            (":authority", "localhost"),
            (":path", path),
        ] + list(headers)
        if body is not None and trailers is None:
            hdrs.append(("content-length", str(len(body))))
        self.conn.send_headers(sid, hdrs, end_stream=body is None)
        s = Stream(sid, path)
        self.streams[sid] = s
        self.flush()
        if body is not None:
            self.send_body(s, body, trailers)
        return s

    def send_body(self, s, body, trailers):
        view = memoryview(body)
        while view:
            window = self.conn.local_flow_control_window(s.sid)
            n = min(window, self.conn.max_outbound_frame_size, len(view))
            if n <= 0:
                self.pump_once(s)
                continue
            self.conn.send_data(s.sid, view[:n].tobytes())
            view = view[n:]
            self.flush()
        if trailers:
            self.conn.send_headers(s.sid, trailers, end_stream=True)
        else:
            self.conn.end_stream(s.sid)
        self.flush()

    def pump_once(self, s=None):
        deadline = self.args.deadline
        self.sock.settimeout(deadline)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            what = f"stream {s.sid} {s.path}" if s else "the connection"
            raise Failure(f"no byte from the proxy within {deadline}s waiting for {what}")
        if not data:
            raise Failure("the proxy closed the connection")
        for ev in self.conn.receive_data(data):
            self.event(ev)
        self.flush()

    def event(self, ev):
        s = self.streams.get(getattr(ev, "stream_id", None))
        if isinstance(ev, h2.events.ResponseReceived):
            s.headers = ev.headers
        elif isinstance(ev, h2.events.DataReceived):
            s.data += ev.data
            if self.auto_ack:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            else:
                s.unacked += ev.flow_controlled_length
                # keep the connection window open; only the stream's window closes
                self.conn.increment_flow_control_window(ev.flow_controlled_length)
        elif isinstance(ev, h2.events.TrailersReceived):
            s.trailers = ev.headers
        elif isinstance(ev, h2.events.StreamEnded):
            s.ended = True
        elif isinstance(ev, h2.events.StreamReset):
            if s is not None:
                s.reset = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev

    def wait(self, s):
        deadline = time.monotonic() + self.args.deadline
        while not (s.ended or s.reset is not None):
            if time.monotonic() > deadline:
                raise Failure(f"stream {s.sid} {s.path} not answered within {self.args.deadline}s")
            self.pump_once(s)
        return s

    def get(self, path, **kw):
        return self.wait(self.request(path, **kw))


def status(s):
    for k, v in s.headers or []:
        if k == ":status":
            return int(v)
    return None


def expect_ok(s, body=None):
    check(s.reset is None, f"{s.path}: stream reset ({s.reset})")
    check(status(s) == 200, f"{s.path}: status {status(s)}")
    if body is not None:
        check(bytes(s.data) == body, f"{s.path}: body {bytes(s.data[:60])!r}… ({len(s.data)} bytes)")


def seq_body(path):
    return f"ok {path}".encode()


def mode_sequential(args):
    c = H2(args)
    worst = 0.0
    for i in range(args.n):
        path = f"/seq/{i}"
        t = time.monotonic()
        expect_ok(c.get(path), seq_body(path))
        worst = max(worst, time.monotonic() - t)
    return {"requests": args.n, "worst_ms": round(worst * 1000, 1)}


def mode_soak(args):
    c = H2(args)
    rng = random.Random(7)
    for i in range(args.n):
        path = f"/seq/{i}"
        expect_ok(c.get(path), seq_body(path))
    done = 0
    while done < args.m:
        burst = []
        for _ in range(min(rng.randint(1, 16), args.m - done)):
            kind = rng.random()
            if kind < 0.5:
                path = f"/soak/{done}"
                burst.append((c.request(path), seq_body(path), None))
            elif kind < 0.8:
                n = rng.choice([0, 1, 100, 16384, 70000, 250000])
                burst.append((c.request(f"/bytes/{n}"), pattern(n), None))
            else:
                body = os.urandom(rng.choice([1, 5000, 100000]))
                s = c.request("/sha", method="POST", body=body)
                burst.append((s, None, hashlib.sha256(body).hexdigest()))
            done += 1
        for s, body, sha in burst:
            c.wait(s)
            expect_ok(s, body)
            if sha is not None:
                got = json.loads(bytes(s.data))
                check(got["sha256"] == sha, f"{s.path}: backend saw another body")
    return {"sequential": args.n, "interleaved": args.m}


def mode_flow(args):
    c = H2(args)
    big = os.urandom(20_000_000)
    s = c.get("/sha", method="POST", body=big)
    expect_ok(s)
    got = json.loads(bytes(s.data))
    check(got["len"] == len(big), f"upload: backend got {got['len']} bytes")
    check(got["sha256"] == hashlib.sha256(big).hexdigest(), "upload: body changed")
    # a slow reader: acknowledge 64 KiB at a time with pauses
    c.auto_ack = False
    s = c.request("/bytes/20000000")
    deadline = time.monotonic() + 60
    while not s.ended:
        check(s.reset is None, f"slow download reset ({s.reset})")
        check(time.monotonic() < deadline, "slow download did not finish within 60 s")
        c.pump_once(s)
        # the frames just read may have closed the stream: no window update then (h2
        # refuses one for a closed stream; a reset is reported at the top of the loop)
        if s.unacked >= 16384 and not s.ended and s.reset is None:
            time.sleep(0.001)
            c.conn.increment_flow_control_window(s.unacked, stream_id=s.sid)
            s.unacked = 0
            c.flush()
    check(bytes(s.data) == pattern(20_000_000), "slow download: body changed")
    # one stream stalled on its window while another is served on the same connection
    stalled = c.request("/bytes/5000000")
    t = time.monotonic()
    while len(stalled.data) < 65535 and time.monotonic() - t < args.deadline:
        c.pump_once(stalled)
    check(len(stalled.data) == 65535, f"stalled stream got {len(stalled.data)} bytes")
    other = c.get("/seq/while-stalled")
    expect_ok(other, seq_body("/seq/while-stalled"))
    c.auto_ack = True
    c.conn.increment_flow_control_window(stalled.unacked, stream_id=stalled.sid)
    c.flush()
    c.wait(stalled)
    expect_ok(stalled, pattern(5000000))
    return {"upload": len(big), "download": 20_000_000}


def mode_rst(args):
    c = H2(args)
    s = c.request("/bytes/50000000")
    while not s.data:
        c.pump_once(s)
    c.conn.reset_stream(s.sid, error_code=8)  # CANCEL
    c.flush()
    expect_ok(c.get("/seq/after-client-reset"), seq_body("/seq/after-client-reset"))
    cut = c.get("/cut")
    check(cut.reset is not None, f"/cut: the stream ended normally with {len(cut.data)} of 1000000 bytes")
    expect_ok(c.get("/seq/after-backend-cut"), seq_body("/seq/after-backend-cut"))
    return {"client_reset": True, "server_reset": cut.reset}


def mode_concurrent(args):
    c = H2(args)
    limit = c.conn.remote_settings.max_concurrent_streams
    check(limit >= args.n, f"the proxy allows only {limit} concurrent streams")
    streams = [c.request(f"/slow/300?i={i}") for i in range(args.n)]
    for s in streams:
        c.wait(s)
        expect_ok(s, b"slow")
    conns = {v for s in streams for k, v in s.headers if k == "x-backend-conn"}
    return {"streams": args.n, "backend_conns": len(conns)}


def mode_headers(args):
    c = H2(args)
    big = "b" * 8000
    sent = [("x-big", big)] + [(f"x-rep-{i}", f"value-{i}-" + "r" * 40) for i in range(50)]
    spoof = [("x-client-identity", "spiffe://evil/admin"), ("x-forwarded-client-cert", "Hash=00")]
    for i in range(20):
        s = c.get("/headers", headers=sent + spoof)
        expect_ok(s)
        got = json.loads(bytes(s.data))["headers"]
        lower = [(k.lower(), v) for k, v in got]
        for k, v in sent:
            check((k, v) in lower, f"request {i}: header {k} lost or changed")
        ids = [v for k, v in lower if k == "x-client-identity"]
        check(len(ids) == 1 and ids[0] != "spiffe://evil/admin", f"identity header not replaced: {ids}")
    s = c.get("/big-headers/60")
    expect_ok(s, b"big headers")
    n = sum(1 for k, v in s.headers if k.startswith("x-h-") and v == "v" * 200)
    check(n == 60, f"{n} of 60 large response headers arrived")
    return {"requests": 21}


def mode_trailers(args):
    c = H2(args)
    s = c.get("/chunked/300000")
    expect_ok(s, pattern(300000))
    t = dict(s.trailers or [])
    check(t.get("x-checksum") == hashlib.sha256(pattern(300000)).hexdigest(), f"trailers: {s.trailers}")
    return {"trailers": t}


def mode_h1soak(args):
    if args.plain:
        conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=args.deadline)
    else:
        ctx = ssl.create_default_context(cafile=args.ca)
        ctx.load_cert_chain(args.cert, args.key)
        conn = http.client.HTTPSConnection("localhost", args.port, timeout=args.deadline, context=ctx)
    first = None
    backends = set()
    for i in range(args.n):
        path = f"/seq/{i}" if i % 3 else f"/bytes/{i * 37}"
        body = seq_body(path) if i % 3 else pattern(i * 37)
        conn.request("GET", path)
        r = conn.getresponse()
        data = r.read()
        check(r.status == 200 and data == body, f"{path}: status {r.status}, {len(data)} bytes")
        backends.add(r.getheader("x-backend-conn"))
        if first is None:
            first = conn.sock
        check(conn.sock is first, f"request {i} needed a new connection")
    return {"requests": args.n, "backend_conns": len(backends)}


def mode_request(args):
    c = H2(args)
    sid = c.conn.get_next_available_stream_id()
    headers = [
        (":method", args.n),
        (":scheme", "https"),
        (":authority", args.authority),
        (":path", args.m),
    ] + [tuple(h.split(":", 1)) for h in args.header]
    c.conn.send_headers(sid, headers, end_stream=True)
    s = Stream(sid, args.m)
    c.streams[sid] = s
    c.flush()
    c.wait(s)
    return {"status": status(s), "body": bytes(s.data).decode("utf-8", "replace"), "reset": s.reset}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode")
    p.add_argument("n", nargs="?", default=0)
    p.add_argument("m", nargs="?", default=0)
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--authority", default="localhost")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--plain", action="store_true")
    p.add_argument("--deadline", type=float, default=5.0)
    args = p.parse_args()
    fn = globals().get("mode_" + args.mode)
    if fn is None:
        sys.exit(f"unknown mode {args.mode}")
    if args.mode != "request":
        args.n, args.m = int(args.n), int(args.m)
    try:
        print(json.dumps(fn(args)), flush=True)
    except (Failure, h2.exceptions.ProtocolError, OSError, ssl.SSLError) as e:
        print(f"FAILED ({args.mode}): {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

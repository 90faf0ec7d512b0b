#!/usr/bin/env python3
"""WebSocket peers for the proxy's tests, on the `websockets` library (PyPI).

  ws.py server PORT
      an echo server on 127.0.0.1:PORT; the text message "close-me" makes the server close
      the connection with code 4000; every handshake's request headers go to stderr as JSON;
      an upgrade of /refuse is answered 403 (the backend refuses it; {"refused": path} to
      stderr)
  ws.py client --port N --ca CA --cert CERT --key KEY [--messages N] [--big BYTES]
      through the mTLS proxy at wss://localhost:N/ws: N messages echoed in order, one BIG
      binary message echoed whole, a close started by the client (code 1000), then a second
      connection whose close the server starts (code 4000). Prints one JSON line.
  ws.py refused --port N --ca CA --cert CERT --key KEY
      an upgrade of /refuse: prints {"status": S} with the HTTP status the client got
  ws.py idle --port N --ca CA --cert CERT --key KEY [--wait SECS]
      a connection that sends nothing, not even pings, until the other side closes it or
      SECS pass: prints {"closed": true|false, "after": seconds}
  ws.py h2 --port N --ca CA --cert CERT --key KEY [--messages N] [--big BYTES] [--path P]
      WebSockets over HTTP/2 (RFC 8441) with the `h2` package: checks that the server's
      SETTINGS offer the extended CONNECT, then opens two WebSockets on one connection
      (extended CONNECT, :protocol websocket): N messages echoed in order on the first
      while a BIG binary message is echoed whole on the second, then a close started by
      the client (1000) on the first and one started by the server (4000) on the second,
      each followed by the end of its stream. Prints one JSON line. When the CONNECT is not
      answered 200, or with --path other than /ws (one stream then), prints {"status": S};
      --path CONNECT sends a plain CONNECT to example.org:443 instead.
"""
import argparse
import asyncio
import hashlib
import json
import os
import socket
import ssl
import sys
import time

import websockets


async def echo(ws):
    print(json.dumps(dict(ws.request.headers.raw_items())), file=sys.stderr, flush=True)
    async for message in ws:
        if message == "close-me":
            await ws.close(code=4000, reason="asked to")
            return
        await ws.send(message)


def refuse(connection, request):
    if request.path == "/refuse":
        print(json.dumps({"refused": request.path}), file=sys.stderr, flush=True)
        return connection.respond(403, "the backend refuses this upgrade\n")
    return None


async def serve(port):
    async with websockets.serve(echo, "127.0.0.1", port, max_size=None, process_request=refuse):
        await asyncio.Future()


async def client(a):
    ctx = ssl.create_default_context(cafile=a.ca)
    ctx.load_cert_chain(a.cert, a.key)
    url = f"wss://localhost:{a.port}/ws"
    out = {}
    started = time.monotonic()
    async with websockets.connect(url, ssl=ctx, max_size=None, open_timeout=10) as ws:
        # many small messages, pipelined in batches, every echo checked in order
        sent = 0
        while sent < a.messages:
            batch = min(500, a.messages - sent)
            for i in range(sent, sent + batch):
                await ws.send(f"message {i}")
            for i in range(sent, sent + batch):
                got = await asyncio.wait_for(ws.recv(), 10)
                if got != f"message {i}":
                    raise SystemExit(f"echo {i} was {got!r}")
            sent += batch
        out["messages"] = sent
        big = bytes(range(256)) * (a.big // 256)
        await ws.send(big)
        got = await asyncio.wait_for(ws.recv(), 60)
        if hashlib.sha256(got).digest() != hashlib.sha256(big).digest():
            raise SystemExit(f"the big message came back different ({len(got)} bytes)")
        out["big"] = len(got)
        await ws.close(code=1000, reason="done")
        out["client_close"] = ws.close_code
    async with websockets.connect(url, ssl=ctx, open_timeout=10) as ws:
        await ws.send("close-me")
        try:
            await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed:
            pass
        out["server_close"] = ws.close_code
    out["seconds"] = round(time.monotonic() - started, 3)
    print(json.dumps(out))


def tls(a):
    ctx = ssl.create_default_context(cafile=a.ca)
    ctx.load_cert_chain(a.cert, a.key)
    return ctx


async def refused(a):
    try:
        async with websockets.connect(f"wss://localhost:{a.port}/refuse", ssl=tls(a), open_timeout=10):
            status = 101
    except websockets.InvalidStatus as e:
        status = e.response.status_code
    print(json.dumps({"status": status}))


async def idle(a):
    started = time.monotonic()
    closed = False
    async with websockets.connect(
        f"wss://localhost:{a.port}/ws", ssl=tls(a), open_timeout=10, ping_interval=None
    ) as ws:
        try:
            await asyncio.wait_for(ws.recv(), a.wait)
        except websockets.ConnectionClosed:
            closed = True
        except asyncio.TimeoutError:
            pass
    print(json.dumps({"closed": closed, "after": round(time.monotonic() - started, 3)}))


# ---- WebSockets over HTTP/2 (RFC 8441), on the sans-IO `h2` package -------------------


class Failure(Exception):
    pass


def ws_frame(opcode, payload):
    """A masked client frame (FIN set)."""
    from websockets.utils import apply_mask

    n = len(payload)
    head = bytearray([0x80 | opcode])
    if n < 126:
        head.append(0x80 | n)
    elif n < 65536:
        head.append(0x80 | 126)
        head += n.to_bytes(2, "big")
    else:
        head.append(0x80 | 127)
        head += n.to_bytes(8, "big")
    key = os.urandom(4)
    return bytes(head) + key + apply_mask(payload, key)


def take_message(buf):
    """One whole message (opcode, payload) from the front of `buf` (server frames are
    unmasked; continuation frames are joined), or None until it has all arrived."""
    pos, parts, first = 0, [], None
    while True:
        if len(buf) < pos + 2:
            return None
        b0, b1 = buf[pos], buf[pos + 1]
        if b1 & 0x80:
            raise Failure("the server masked a frame")
        n, at = b1 & 0x7F, pos + 2
        if n == 126:
            if len(buf) < at + 2:
                return None
            n, at = int.from_bytes(buf[at:at + 2], "big"), at + 2
        elif n == 127:
            if len(buf) < at + 8:
                return None
            n, at = int.from_bytes(buf[at:at + 8], "big"), at + 8
        if len(buf) < at + n:
            return None
        first = b0 & 0x0F if first is None else first
        parts.append(bytes(buf[at:at + n]))
        pos = at + n
        if b0 & 0x80:
            del buf[:pos]
            return first, b"".join(parts)


class H2:
    """One HTTP/2 client connection over TLS, driven by hand."""

    def __init__(self, a):
        import h2.config
        import h2.connection

        raw = socket.create_connection(("127.0.0.1", a.port), timeout=30)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ctx = tls(a)
        ctx.set_alpn_protocols(["h2"])
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        if self.sock.selected_alpn_protocol() != "h2":
            raise Failure(f"ALPN gave {self.sock.selected_alpn_protocol()!r}")
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        self.flush()
        self.settings = False
        self.status, self.inbox, self.ended, self.reset = {}, {}, set(), {}

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def pump(self):
        import h2.events as ev

        data = self.sock.recv(65536)
        if not data:
            raise Failure("the proxy closed the connection")
        for e in self.conn.receive_data(data):
            if isinstance(e, ev.RemoteSettingsChanged):
                self.settings = True
            elif isinstance(e, ev.ResponseReceived):
                self.status[e.stream_id] = int(dict(e.headers)[":status"])
            elif isinstance(e, ev.DataReceived):
                self.inbox.setdefault(e.stream_id, bytearray()).extend(e.data)
                self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, ev.StreamEnded):
                self.ended.add(e.stream_id)
            elif isinstance(e, ev.StreamReset):
                self.reset[e.stream_id] = e.error_code
                self.ended.add(e.stream_id)
        self.flush()

    def until(self, what, cond, secs=30):
        end = time.monotonic() + secs
        while not cond():
            if time.monotonic() > end:
                raise Failure(f"timed out waiting for {what}")
            self.pump()

    def connect(self, path):
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [
            (":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"),
            (":path", path), (":authority", "localhost"),
            ("sec-websocket-version", "13"),
        ])
        self.flush()
        return sid

    def send(self, sid, data):
        view = memoryview(data)
        while view:
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if room <= 0:
                self.pump()
                continue
            self.conn.send_data(sid, view[:room].tobytes())
            view = view[room:]
            self.flush()

    def message(self, sid, secs=30):
        box = self.inbox.setdefault(sid, bytearray())
        end = time.monotonic() + secs
        while True:
            m = take_message(box)
            if m is not None:
                return m
            if sid in self.ended:
                raise Failure(f"stream {sid} ended (reset: {self.reset.get(sid)}) mid-message")
            if time.monotonic() > end:
                raise Failure(f"timed out waiting for a message on stream {sid}")
            self.pump()


def h2_websockets(a):
    c = H2(a)
    c.until("the server's SETTINGS", lambda: c.settings)
    if not c.conn.remote_settings.enable_connect_protocol:
        raise Failure("the server's SETTINGS do not offer the extended CONNECT (RFC 8441)")
    out = {"enable_connect_protocol": True}
    if a.path == "CONNECT":
        # a plain CONNECT (a tunnel to host:port), which the proxy does not offer
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(sid, [(":method", "CONNECT"), (":authority", "example.org:443")])
        c.flush()
        c.until("the answer", lambda: sid in c.status)
        print(json.dumps({"status": c.status[sid]}))
        return
    if a.path != "/ws":
        sid = c.connect(a.path)
        c.until("the answer", lambda: sid in c.status)
        print(json.dumps({"status": c.status[sid]}))
        return
    first, second = c.connect("/ws"), c.connect("/ws")
    c.until("both answers", lambda: first in c.status and second in c.status)
    out["status"] = [c.status[first], c.status[second]]
    if out["status"] != [200, 200]:
        # refused: the answer is the result
        print(json.dumps({"status": c.status[first]}))
        return
    # the big message goes out on the second stream first; the small ones interleave with
    # its echo on the first
    big = bytes(range(256)) * (a.big // 256)
    c.send(second, ws_frame(0x2, big))
    sent = 0
    while sent < a.messages:
        batch = min(500, a.messages - sent)
        c.send(first, b"".join(ws_frame(0x1, f"message {i}".encode()) for i in range(sent, sent + batch)))
        for i in range(sent, sent + batch):
            op, got = c.message(first)
            if (op, got) != (0x1, f"message {i}".encode()):
                raise Failure(f"echo {i} was {op} {got[:40]!r}")
        sent += batch
    out["messages"] = sent
    op, got = c.message(second, 120)
    if op != 0x2 or hashlib.sha256(got).digest() != hashlib.sha256(big).digest():
        raise Failure(f"the big message came back different ({len(got)} bytes)")
    out["big"] = len(got)
    # a close started by the client: the server's close frame, then the stream's end
    c.send(first, ws_frame(0x8, (1000).to_bytes(2, "big") + b"done"))
    op, got = c.message(first)
    if op != 0x8:
        raise Failure(f"expected a close frame, got opcode {op}")
    out["client_close"] = int.from_bytes(got[:2], "big")
    c.conn.end_stream(first)
    c.flush()
    c.until("the end of the first stream", lambda: first in c.ended)
    # a close started by the server
    c.send(second, ws_frame(0x1, b"close-me"))
    op, got = c.message(second)
    if op != 0x8:
        raise Failure(f"expected the server's close frame, got opcode {op}")
    out["server_close"] = int.from_bytes(got[:2], "big")
    c.send(second, ws_frame(0x8, got[:2]))
    c.conn.end_stream(second)
    c.flush()
    c.until("the end of the second stream", lambda: second in c.ended)
    out["reset"] = sorted(c.reset.values())
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["server", "client", "refused", "idle", "h2"])
    p.add_argument("port_arg", nargs="?", type=int)
    p.add_argument("--port", type=int)
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--messages", type=int, default=10000)
    p.add_argument("--big", type=int, default=16 << 20)
    p.add_argument("--wait", type=float, default=20)
    p.add_argument("--path", default="/ws")
    a = p.parse_args()
    if a.mode == "server":
        asyncio.run(serve(a.port_arg))
    elif a.mode == "refused":
        asyncio.run(refused(a))
    elif a.mode == "idle":
        asyncio.run(idle(a))
    elif a.mode == "h2":
        try:
            h2_websockets(a)
        except Failure as e:
            raise SystemExit(f"ws.py h2: {e}")
    else:
        asyncio.run(client(a))


if __name__ == "__main__":
    main()

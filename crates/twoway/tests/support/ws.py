#!/usr/bin/env python3
"""WebSocket peers for the proxy's tests, on the `websockets` library (PyPI).

  ws.py server PORT
      an echo server on 127.0.0.1:PORT; the text message "close-me" makes the server close
      the connection with code 4000; every handshake's request headers go to stderr as JSON;
      an upgrade of /refuse is answered 403 (the backend refuses it)
  ws.py client --port N --ca CA --cert CERT --key KEY [--messages N] [--big BYTES]
      through the mTLS proxy at wss://localhost:N/ws: N messages echoed in order, one BIG
      binary message echoed whole, a close started by the client (code 1000), then a second
      connection whose close the server starts (code 4000). Prints one JSON line.
  ws.py refused --port N --ca CA --cert CERT --key KEY
      an upgrade of /refuse: prints {"status": S} with the HTTP status the client got
  ws.py idle --port N --ca CA --cert CERT --key KEY [--wait SECS]
      a connection that sends nothing, not even pings, until the other side closes it or
      SECS pass: prints {"closed": true|false, "after": seconds}
"""
import argparse
import asyncio
import hashlib
import json
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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["server", "client", "refused", "idle"])
    p.add_argument("port_arg", nargs="?", type=int)
    p.add_argument("--port", type=int)
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--messages", type=int, default=10000)
    p.add_argument("--big", type=int, default=16 << 20)
    p.add_argument("--wait", type=float, default=20)
    a = p.parse_args()
    if a.mode == "server":
        asyncio.run(serve(a.port_arg))
    elif a.mode == "refused":
        asyncio.run(refused(a))
    elif a.mode == "idle":
        asyncio.run(idle(a))
    else:
        asyncio.run(client(a))


if __name__ == "__main__":
    main()

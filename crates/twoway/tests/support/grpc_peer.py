#!/usr/bin/env python3
"""A gRPC server and client (grpcio from PyPI) for the proxy's gRPC tests. The service is
defined with grpcio's generic handlers and raw bytes (no serializers), so no .proto file or
protoc step is needed.

Usage:
  grpc_peer.py server PORT [--tls CERT KEY]
      h2c (plaintext HTTP/2) gRPC server on 127.0.0.1:PORT, or over TLS (ALPN h2) with
      --tls. It prints one line per event,
      flushed: `call METHOD identity=<x-client-identity>`, `cancelled METHOD`,
      `deadline METHOD <seconds remaining when the call began>`.
  grpc_peer.py tls-http1 PORT CERT KEY
      an HTTPS server that speaks only HTTP/1.1 (ALPN http/1.1 or none) on 127.0.0.1:PORT
  grpc_peer.py client --port N --ca CA --cert CERT --key KEY SCENARIO
      mTLS to the proxy on 127.0.0.1:N (server name localhost); prints one JSON object:
        calls     unary, server-, client- and bidi-streaming calls, trailing metadata, an
                  error status from the server, ping-pong bidi
        denied    a call of a method the routes refuse: its status code and details
        deadline  a slow call with a 1 s deadline: the status the client sees
        cancel    a server stream cancelled by the client after two messages
        unary     one unary call: status and reply (for the protocol-mismatch cases)

Service `twoway.test.Echo`:
  Unary(bytes) -> b"echo:" + request + b" id=" + identity
  Fail(bytes) -> NOT_FOUND "no such thing: " + request
  Count(n as decimal) -> n messages of 64 KiB each, the first byte the index mod 256
  Sum(stream) -> b"<count> <total bytes>"
  Chat(stream) -> each message echoed back upper-cased, as it arrives
  Slow(bytes) -> waits up to 10 s for cancellation, then b"slept"
  Ticks(bytes) -> a message every 100 ms for up to 10 s, until cancelled
Service `twoway.admin.Secret`:
  Get(bytes) -> b"secret" (the routes of the tests deny it)
"""
import json
import queue
import sys
import threading
import time
from concurrent import futures

import grpc


def log(*a):
    print(*a, flush=True)


def identity(ctx):
    for k, v in ctx.invocation_metadata():
        if k == "x-client-identity":
            return v
    return ""


def wait_cancelled(ctx, name, seconds):
    """True when the call was cancelled (checked every 20 ms, at most `seconds`)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not ctx.is_active():
            log(f"cancelled {name}")
            return True
        time.sleep(0.02)
    return False


def serve(port, tls=None):
    def unary(req, ctx):
        log(f"call Unary identity={identity(ctx)}")
        ctx.set_trailing_metadata((("x-trailer", "unary-done"),))
        return b"echo:" + req + b" id=" + identity(ctx).encode()

    def fail(req, ctx):
        log("call Fail")
        ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing: " + req.decode(errors="replace"))

    def count(req, ctx):
        log("call Count")
        for i in range(int(req)):
            yield bytes([i % 256]) * 65536

    def total(reqs, ctx):
        log("call Sum")
        n = size = 0
        for r in reqs:
            n += 1
            size += len(r)
        return f"{n} {size}".encode()

    def chat(reqs, ctx):
        log("call Chat")
        for r in reqs:
            yield r.upper()

    def slow(req, ctx):
        remaining = ctx.time_remaining()
        log(f"call Slow")
        log(f"deadline Slow {remaining if remaining is not None else 'none'}")
        wait_cancelled(ctx, "Slow", 10)
        return b"slept"

    def ticks(req, ctx):
        log("call Ticks")
        for i in range(100):
            if not ctx.is_active():
                log("cancelled Ticks")
                return
            yield f"tick {i}".encode()
            time.sleep(0.1)
        if wait_cancelled(ctx, "Ticks", 0.5) is False:
            log("finished Ticks")

    def secret(req, ctx):
        log(f"call Get identity={identity(ctx)}")
        return b"secret"

    echo = grpc.method_handlers_generic_handler(
        "twoway.test.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
            "Count": grpc.unary_stream_rpc_method_handler(count),
            "Sum": grpc.stream_unary_rpc_method_handler(total),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
            "Slow": grpc.unary_unary_rpc_method_handler(slow),
            "Ticks": grpc.unary_stream_rpc_method_handler(ticks),
        },
    )
    admin = grpc.method_handlers_generic_handler(
        "twoway.admin.Secret", {"Get": grpc.unary_unary_rpc_method_handler(secret)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((echo, admin))
    if tls:
        cert, key = (open(p, "rb").read() for p in tls)
        server.add_secure_port(f"127.0.0.1:{port}", grpc.ssl_server_credentials([(key, cert)]))
    else:
        server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    log("listening")
    server.wait_for_termination(timeout=600)


def serve_tls_http1(port, cert, key):
    import http.server
    import ssl

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = b"http/1.1 only\n"
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *a):
            log("request", self.requestline)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    httpd.timeout = 600
    log("listening")
    httpd.serve_forever()


def status_of(err):
    return {"code": err.code().name, "details": err.details()}


def client(args):
    opts = dict(zip(args[0:-1:2], args[1:-1:2]))
    scenario = args[-1]
    read = lambda p: open(p, "rb").read()
    creds = grpc.ssl_channel_credentials(
        root_certificates=read(opts["--ca"]),
        private_key=read(opts["--key"]),
        certificate_chain=read(opts["--cert"]),
    )
    ch = grpc.secure_channel(f"localhost:{opts['--port']}", creds)
    m = lambda kind, path: getattr(ch, kind)(path)
    out = {}
    if scenario == "calls":
        unary = m("unary_unary", "/twoway.test.Echo/Unary")
        reply, call = unary.with_call(b"hello", timeout=10)
        out["unary"] = reply.decode()
        out["unary_trailers"] = dict(call.trailing_metadata())
        out["unary_code"] = call.code().name
        try:
            m("unary_unary", "/twoway.test.Echo/Fail")(b"widget", timeout=10)
            out["fail"] = "no error"
        except grpc.RpcError as e:
            out["fail"] = status_of(e)
        msgs = list(m("unary_stream", "/twoway.test.Echo/Count")(b"200", timeout=30))
        out["count"] = [len(msgs), sum(len(x) for x in msgs), all(x[0] == i % 256 for i, x in enumerate(msgs))]
        out["sum"] = m("stream_unary", "/twoway.test.Echo/Sum")(
            iter([b"x" * 100_000] * 50), timeout=30
        ).decode()
        # ping-pong: each message is sent only after the previous answer came back, so a
        # proxy that buffered either direction would stall here
        q = queue.Queue()
        q.put(b"m0")

        def gen():
            for _ in range(100):
                item = q.get(timeout=5)
                if item is None:
                    return
                yield item

        answers = []
        for i, r in enumerate(m("stream_stream", "/twoway.test.Echo/Chat")(gen(), timeout=30)):
            answers.append(r.decode())
            q.put(f"m{i + 1}".encode() if i + 1 < 100 else None)
        out["chat"] = [len(answers), answers[0], answers[-1]]
    elif scenario == "denied":
        try:
            m("unary_unary", "/twoway.admin.Secret/Get")(b"", timeout=10)
            out["denied"] = "allowed"
        except grpc.RpcError as e:
            out["denied"] = status_of(e)
    elif scenario == "deadline":
        start = time.monotonic()
        try:
            m("unary_unary", "/twoway.test.Echo/Slow")(b"", timeout=1)
            out["deadline"] = "no error"
        except grpc.RpcError as e:
            out["deadline"] = status_of(e)
        out["seconds"] = round(time.monotonic() - start, 2)
    elif scenario == "cancel":
        call = m("unary_stream", "/twoway.test.Echo/Ticks")(b"", timeout=30)
        got = [next(call).decode(), next(call).decode()]
        call.cancel()
        out["got"] = got
        out["cancelled"] = call.code().name
    elif scenario == "unary":
        try:
            out["reply"] = m("unary_unary", "/twoway.test.Echo/Unary")(b"hi", timeout=10).decode()
            out["code"] = "OK"
        except grpc.RpcError as e:
            out.update(status_of(e))
    else:
        sys.exit(f"unknown scenario {scenario}")
    ch.close()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    elif len(sys.argv) == 6 and sys.argv[1] == "server" and sys.argv[3] == "--tls":
        serve(int(sys.argv[2]), tls=(sys.argv[4], sys.argv[5]))
    elif len(sys.argv) == 5 and sys.argv[1] == "tls-http1":
        serve_tls_http1(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    elif len(sys.argv) > 2 and sys.argv[1] == "client":
        client(sys.argv[2:])
    else:
        sys.exit(__doc__)

#!/usr/bin/env python3
"""An HTTP/1.1 backend for the proxy's HTTP tests, written on raw sockets so that framing
(chunked bodies, trailers, a body cut short) is exactly what a test asks for.

Usage: backend.py PORT   (listens on 127.0.0.1:PORT, one thread per connection, keep-alive)

  GET  /bytes/N        N bytes (a repeating pattern), Content-Length
  GET  /chunked/N      N bytes, chunked, with the trailer `x-checksum: <sha256 hex>`
  GET  /headers        JSON: the request line and every header as received, in order
  GET  /big-headers/N  a response carrying N headers `x-h-<i>: <200 bytes>`
  GET  /slow/MS        waits MS milliseconds, then answers "slow"
  GET  /drip/MS        32 KiB in 16 pieces spread over MS milliseconds (Content-Length)
  GET  /cut            announces 1 MB, sends 1,000 bytes, closes the connection
  POST|PUT /sha        JSON: {"len": bytes, "sha256": hex, "trailers": {...}} of the body
                       (Content-Length or chunked, read whole)
  anything else        200 "ok <path>"
Every answer carries `x-backend-conn: <n>`, the number of this backend connection.
"""
import hashlib
import json
import socket
import socketserver
import sys
import threading
import time

PATTERN = bytes(range(256)) * 4096  # 1 MiB


def pattern(n):
    out = bytearray()
    while len(out) < n:
        out += PATTERN[: n - len(out)]
    return bytes(out)


class Conn:
    counter = 0
    lock = threading.Lock()

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        with Conn.lock:
            Conn.counter += 1
            self.n = Conn.counter

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > 1 << 20:
                raise ValueError("line too long")
            self.fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exact(self, n):
        while len(self.buf) < n:
            self.fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def head(self):
        request = self.line()
        while request == b"":
            request = self.line()
        headers = []
        while True:
            line = self.line()
            if line == b"":
                break
            name, _, value = line.partition(b":")
            headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
        return request.decode("latin-1"), headers

    def body(self, headers):
        lower = {k.lower(): v for k, v in headers}
        trailers = {}
        if "chunked" in lower.get("transfer-encoding", "").lower():
            h = hashlib.sha256()
            total = 0
            while True:
                size = int(self.line().split(b";")[0], 16)
                if size == 0:
                    while True:
                        t = self.line()
                        if t == b"":
                            break
                        name, _, value = t.partition(b":")
                        trailers[name.decode().lower()] = value.strip().decode()
                    return total, h.hexdigest(), trailers
                data = self.exact(size)
                h.update(data)
                total += size
                self.exact(2)
        n = int(lower.get("content-length", "0"))
        h = hashlib.sha256()
        left = n
        while left:
            data = self.exact(min(left, 65536))
            h.update(data)
            left -= len(data)
        return n, h.hexdigest(), trailers

    def send(self, status, body, extra=()):
        head = f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\nx-backend-conn: {self.n}\r\n"
        for k, v in extra:
            head += f"{k}: {v}\r\n"
        self.sock.sendall(head.encode() + b"\r\n" + body)


def serve(conn):
    while True:
        try:
            request, headers = conn.head()
        except (EOFError, ConnectionError, OSError):
            return
        method, target, _version = request.split(" ", 2)
        size, digest, trailers = conn.body(headers)
        parts = target.split("?")[0].strip("/").split("/")
        if parts[0] == "bytes":
            conn.send("200 OK", pattern(int(parts[1])))
        elif parts[0] == "chunked":
            data = pattern(int(parts[1]))
            head = (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n"
                f"x-backend-conn: {conn.n}\r\n\r\n"
            )
            conn.sock.sendall(head.encode())
            for i in range(0, len(data), 50000):
                piece = data[i : i + 50000]
                conn.sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            sha = hashlib.sha256(data).hexdigest()
            conn.sock.sendall(b"0\r\nx-checksum: " + sha.encode() + b"\r\n\r\n")
        elif parts[0] == "headers":
            body = json.dumps({"request": request, "headers": headers}).encode()
            conn.send("200 OK", body, [("content-type", "application/json")])
        elif parts[0] == "big-headers":
            extra = [(f"x-h-{i}", "v" * 200) for i in range(int(parts[1]))]
            conn.send("200 OK", b"big headers", extra)
        elif parts[0] == "slow":
            time.sleep(int(parts[1]) / 1000)
            conn.send("200 OK", b"slow")
        elif parts[0] == "drip":
            total, pieces = 32768, 16
            conn.sock.sendall(
                f"HTTP/1.1 200 OK\r\ncontent-length: {total}\r\nx-backend-conn: {conn.n}\r\n\r\n".encode()
            )
            for _ in range(pieces):
                time.sleep(int(parts[1]) / 1000 / pieces)
                conn.sock.sendall(b"d" * (total // pieces))
        elif parts[0] == "cut":
            conn.sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n" + b"c" * 1000)
            conn.sock.shutdown(socket.SHUT_RDWR)
            return
        elif parts[0] == "sha" and method in ("POST", "PUT"):
            body = json.dumps({"len": size, "sha256": digest, "trailers": trailers}).encode()
            conn.send("200 OK", body, [("content-type", "application/json")])
        else:
            conn.send("200 OK", f"ok {target}".encode())


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            serve(Conn(self.request))
        except (ConnectionError, OSError, ValueError, EOFError):
            pass


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


if __name__ == "__main__":
    with Server(("127.0.0.1", int(sys.argv[1])), Handler) as s:
        print("listening", flush=True)
        s.serve_forever()

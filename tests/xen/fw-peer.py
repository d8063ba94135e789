#!/usr/bin/python3
"""dom0 as sys-net for the firewall checks: HTTP on ADDR:8080 (any GET answers 200; each request
logged "HTTP <client> <path>"), DNS on ADDR:53 (every A query answered with ADDR; "DNS <client>
<name>"), a TCP sink on ADDR:5001 ("SINK <client> <bytes> bytes in <s> s = <MB/s> MB/s" per
connection, timed from its first byte to its last; closed by us after SINK_BYTES, argv[2], as
busybox nc may not shut its side down at EOF). One line each on stdout, flushed."""
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ADDR = sys.argv[1]
SINK_BYTES = int(sys.argv[2]) if len(sys.argv) > 2 else 1 << 62


def log(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Page(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from dom0 " + self.path.encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        log(f"HTTP {self.client_address[0]} {self.path}")

    def log_message(self, *args):
        pass


def dns():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ADDR, 53))
    while True:
        q, peer = s.recvfrom(512)
        if len(q) < 12:
            continue
        # The question: labels up to the zero byte, then QTYPE and QCLASS.
        end = q.index(b"\0", 12) + 5
        labels, i = [], 12
        while q[i]:
            labels.append(q[i + 1 : i + 1 + q[i]].decode(errors="replace"))
            i += q[i] + 1
        qtype = struct.unpack(">H", q[end - 4 : end - 2])[0]
        answers = 1 if qtype == 1 else 0
        head = q[:2] + struct.pack(">HHHHH", 0x8180, 1, answers, 0, 0)
        ans = b""
        if answers:
            ans = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(ADDR)
        s.sendto(head + q[12:end] + ans, peer)
        log(f"DNS {peer[0]} {'.'.join(labels)} type {qtype}")


def sink():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ADDR, 5001))
    s.listen(4)
    while True:
        c, peer = s.accept()
        n, t0, t1 = 0, None, None
        while True:
            b = c.recv(1 << 16)
            if not b:
                break
            if t0 is None:
                t0 = time.monotonic()
            n += len(b)
            t1 = time.monotonic()
            if n >= SINK_BYTES:
                break
        c.close()
        dt = (t1 - t0) if t0 is not None else 0.0
        rate = n / dt / 1e6 if dt > 0 else 0.0
        log(f"SINK {peer[0]} {n} bytes in {dt:.2f} s = {rate:.2f} MB/s")


threading.Thread(target=dns, daemon=True).start()
threading.Thread(target=sink, daemon=True).start()
log(f"READY {ADDR}")
ThreadingHTTPServer((ADDR, 8080), Page).serve_forever()

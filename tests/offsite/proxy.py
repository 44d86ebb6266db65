#!/usr/bin/env python3
"""Fault-injecting TCP proxy for the offsite tests (stdlib only).

  proxy.py --port P --target T --dir D

Forwards 127.0.0.1:P to 127.0.0.1:T, one upstream connection per client connection, bytes
unchanged (so an S3 request signed for host 127.0.0.1:P stays valid, and SSH runs through).
It is steered through files in D, so a test shell needs no signals and gets an
acknowledgement:

  D/control   "SEQ COMMAND [ARG]", written by the test (write a temporary file, rename it):
      pass RATE        forward; RATE > 0 caps each direction to RATE bytes/s (0 = unlimited).
                       Ends a drop.
      drop reset       the link died loudly: every open connection is reset (RST), and the
                       listening socket is closed, so new connections are refused.
      drop blackhole   the link died silently: nothing is forwarded any more and nothing is
                       closed; open connections stall (a sender's writes block once the
                       socket buffers fill) and new connections complete the TCP handshake in
                       the kernel's backlog but never see a byte. Only a client's own timeout
                       gets it out.
      stats            only refresh D/state.
    Leaving a drop (any "pass") resets the connections that were open or queued during it:
    their sessions are considered lost, as after a NAT or firewall timeout.
  D/state     written back (atomically) once a command took effect:
      "seq=SEQ mode=pass|reset|blackhole rate=R open=N accepted=N up=BYTES down=BYTES"
      (up = client to target, down = target to client, bytes forwarded so far).

The control file is polled every 20 ms. Throttling uses one token bucket per direction
shared by all connections (it models the link, not a connection); reads are cut into slices
of at most 1/20 s worth of bytes so the rate holds over short intervals too. The kernel's
socket buffers still take a few hundred KiB before the throttle bites; measure rates at the
receiving end over a second or more.
"""
import argparse
import os
import selectors
import socket
import struct
import sys
import threading
import time


def log(msg):
    sys.stderr.write("%s proxy: %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def reset(sock):
    """Closes a socket with an RST instead of a FIN (SO_LINGER on, timeout 0)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class Bucket:
    """Token bucket; rate 0 = unlimited. A taker may overdraw and then sleeps off the debt."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rate = 0
        self.tokens = 0.0
        self.last = time.monotonic()

    def set_rate(self, rate):
        with self.lock:
            self.rate, self.tokens, self.last = rate, 0.0, time.monotonic()

    def slice(self):
        rate = self.rate
        return 65536 if rate == 0 else max(1, min(65536, rate // 20))

    def take(self, n):
        with self.lock:
            if self.rate == 0:
                return
            now = time.monotonic()
            burst = max(1.0, self.rate / 20)
            self.tokens = min(burst, self.tokens + (now - self.last) * self.rate) - n
            self.last = now
            wait = -self.tokens / self.rate if self.tokens < 0 else 0
        if wait > 0:
            time.sleep(wait)


class Proxy:
    def __init__(self, port, target, directory):
        self.port, self.target, self.dir = port, target, directory
        self.cond = threading.Condition()
        self.mode = "pass"
        self.rate = 0
        self.conns = set()  # open Conn objects
        self.accepted = 0
        self.up = self.down = 0
        self.buckets = {"up": Bucket(), "down": Bucket()}
        self.listener = None
        self.sel = selectors.DefaultSelector()
        self.seq = None

    # ---- listening socket ----
    def listen(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(128)
        s.setblocking(False)
        self.listener = s
        self.sel.register(s, selectors.EVENT_READ)

    def unlisten(self):
        if self.listener is not None:
            self.sel.unregister(self.listener)
            self.listener.close()
            self.listener = None

    # ---- commands ----
    def apply(self, line):
        parts = line.split()
        if len(parts) < 2 or parts[0] == self.seq:
            return
        seq, cmd, arg = parts[0], parts[1], parts[2] if len(parts) > 2 else ""
        if cmd == "pass":
            if self.mode != "pass":
                self.leave_drop()
            self.rate = int(arg or 0)
            for b in self.buckets.values():
                b.set_rate(self.rate)
        elif cmd == "drop" and arg in ("reset", "blackhole"):
            if self.mode != "pass":
                self.leave_drop()
            with self.cond:
                self.mode = arg
                doomed = list(self.conns) if arg == "reset" else []
            for c in doomed:
                c.kill()
            if arg == "reset":
                self.unlisten()
        elif cmd != "stats":
            log("ignored command %r" % line)
        log("command %s %s -> mode=%s rate=%d open=%d" % (cmd, arg, self.mode, self.rate,
                                                          len(self.conns)))
        self.seq = seq
        self.write_state()

    def leave_drop(self):
        """Back to pass: connections from the drop are lost, new ones work again."""
        with self.cond:
            old, doomed = self.mode, list(self.conns)
            self.mode = "pass"
            self.cond.notify_all()
        for c in doomed:
            c.kill()
        if old == "blackhole" and self.listener is not None:
            while True:  # handshakes the kernel completed during the blackhole
                try:
                    s, _ = self.listener.accept()
                except (BlockingIOError, InterruptedError):
                    break
                reset(s)
        if self.listener is None:
            self.listen()

    def write_state(self):
        with self.cond:
            text = "seq=%s mode=%s rate=%d open=%d accepted=%d up=%d down=%d\n" % (
                self.seq, self.mode, self.rate, len(self.conns), self.accepted, self.up,
                self.down)
        tmp = os.path.join(self.dir, "state.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, os.path.join(self.dir, "state"))

    def poll_control(self):
        try:
            with open(os.path.join(self.dir, "control")) as f:
                line = f.read().strip()
        except OSError:
            return
        if line:
            self.apply(line)

    # ---- main loop ----
    def run(self):
        self.listen()
        self.seq = "0"
        self.write_state()
        log("forwarding 127.0.0.1:%d -> 127.0.0.1:%d" % (self.port, self.target))
        while True:
            if self.listener is None or self.mode != "pass":
                # dropped: nothing to accept (a blackhole leaves handshakes in the backlog)
                time.sleep(0.02)
            elif self.sel.select(timeout=0.02):
                while True:
                    try:
                        client, _ = self.listener.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    client.setblocking(True)
                    self.accepted += 1
                    threading.Thread(target=Conn(self, client).run, daemon=True).start()
            self.poll_control()


class Conn:
    def __init__(self, proxy, client):
        self.p = proxy
        self.client = client
        self.upstream = None
        self.dead = False
        self.done = 0
        self.lock = threading.Lock()

    def kill(self):
        """Resets both sides (used on drops); the pumps then fail and exit."""
        with self.lock:
            if self.dead:
                return
            self.dead = True
        for s in (self.client, self.upstream):
            if s is not None:
                try:
                    s.shutdown(socket.SHUT_RDWR)  # wakes a pump blocked in recv()
                except OSError:
                    pass
                reset(s)
        with self.p.cond:
            self.p.conns.discard(self)
            self.p.cond.notify_all()

    def close(self):
        with self.lock:
            if self.dead:
                return
            self.dead = True
        for s in (self.client, self.upstream):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        with self.p.cond:
            self.p.conns.discard(self)

    def run(self):
        with self.p.cond:
            if self.p.mode != "pass":
                reset(self.client)
                return
            self.p.conns.add(self)
        try:
            self.upstream = socket.create_connection(("127.0.0.1", self.p.target), timeout=10)
            self.upstream.settimeout(None)
        except OSError as e:
            # the target is down: the client sees its connection reset, as from a dead server
            log("connect to target failed: %s" % e)
            self.kill()
            return
        if self.dead:  # killed while connecting
            reset(self.upstream)
            return
        threading.Thread(target=self.pump, args=(self.upstream, self.client, "down"),
                         daemon=True).start()
        self.pump(self.client, self.upstream, "up")

    def pump(self, src, dst, direction):
        bucket = self.p.buckets[direction]
        try:
            while not self.dead:
                data = src.recv(bucket.slice())
                if not data:
                    try:
                        dst.shutdown(socket.SHUT_WR)  # pass the half-close on
                    except OSError:
                        pass
                    break
                with self.p.cond:  # a blackhole holds the data until the drop ends
                    while self.p.mode == "blackhole" and not self.dead:
                        self.p.cond.wait()
                if self.dead:
                    return
                bucket.take(len(data))
                dst.sendall(data)
                with self.p.cond:
                    if direction == "up":
                        self.p.up += len(data)
                    else:
                        self.p.down += len(data)
        except OSError:
            self.close()
            return
        with self.lock:
            self.done += 1
            both = self.done == 2
        if both:
            self.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--target", type=int, required=True)
    ap.add_argument("--dir", required=True)
    a = ap.parse_args()
    Proxy(a.port, a.target, a.dir).run()


if __name__ == "__main__":
    main()

"""A TLS client on Python's ssl module (OpenSSL), driven by tests/tls.rs.

    python3 client.py ACTION PORT [options]

Prints one JSON object: what happened. Every action verifies the server
against ca.crt as "localhost" unless told otherwise.
"""

import argparse
import json
import os
import socket
import ssl
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def context(args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(os.path.join(HERE, "ca.crt"))
    versions = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3,
                "1.1": getattr(ssl.TLSVersion, "TLSv1_1")}
    if args.version:
        ctx.minimum_version = versions[args.version]
        ctx.maximum_version = versions[args.version]
        if args.version == "1.1":
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    if args.alpn:
        ctx.set_alpn_protocols(args.alpn.split(","))
    if args.cert:
        ctx.load_cert_chain(os.path.join(HERE, args.cert + ".crt"),
                            os.path.join(HERE, args.cert + ".key"))
    return ctx


def connect(args):
    raw = socket.create_connection(("127.0.0.1", args.port), timeout=20)
    return context(args).wrap_socket(raw, server_hostname="localhost")


def read_exactly(t, n):
    got = bytearray()
    while len(got) < n:
        chunk = t.recv(min(65536, n - len(got)))
        if not chunk:
            break
        got += chunk
    return bytes(got)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("action")
    p.add_argument("port", type=int)
    p.add_argument("--version")
    p.add_argument("--alpn")
    p.add_argument("--cert")
    p.add_argument("--size", type=int, default=1 << 20)
    p.add_argument("--requests", type=int, default=3)
    args = p.parse_args()
    out = {}
    try:
        if args.action == "echo":
            # Random bytes, sent while the echo is read back.
            data = os.urandom(args.size)
            with connect(args) as t:
                out.update(version=t.version(), alpn=t.selected_alpn_protocol(),
                           cipher=t.cipher()[0])
                t.settimeout(20)
                sent = 0
                got = bytearray()
                t.setblocking(True)
                while sent < len(data):
                    n = t.send(data[sent:sent + 65536])
                    sent += n
                    # Keep the server's output moving: read what is there.
                    t.settimeout(0.0)
                    try:
                        while True:
                            chunk = t.recv(65536)
                            if not chunk:
                                break
                            got += chunk
                    except (ssl.SSLWantReadError, BlockingIOError, socket.timeout):
                        pass
                    t.settimeout(20)
                got += read_exactly(t, len(data) - len(got))
                out["echo_ok"] = bytes(got) == data
                out["bytes"] = len(got)
                out["server_cert"] = ssl.DER_cert_to_PEM_cert(t.getpeercert(binary_form=True))
        elif args.action == "greeting":
            # The server speaks first; then its clean close is seen.
            with connect(args) as t:
                out.update(version=t.version(), alpn=t.selected_alpn_protocol())
                line = b""
                while not line.endswith(b"\n"):
                    chunk = t.recv(1024)
                    if not chunk:
                        break
                    line += chunk
                out["greeting"] = line.decode()
                t.sendall(b"bye\n")
                rest = b""
                while True:
                    chunk = t.recv(1024)
                    if not chunk:
                        break
                    rest += chunk
                out["rest"] = rest.decode()
                out["clean_close"] = True
        elif args.action == "http":
            # Pipelined keep-alive requests in one write.
            req = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
            with connect(args) as t:
                t.sendall(req * args.requests)
                body = b""
                while body.count(b"Hello, World!") < args.requests:
                    chunk = t.recv(65536)
                    if not chunk:
                        break
                    body += chunk
                out["responses"] = body.count(b"HTTP/1.1 200 OK")
        else:
            out["error"] = "unknown action"
    except ssl.SSLEOFError as e:
        out["error"] = "eof: " + str(e)
        out["clean_close"] = False
    except ssl.SSLError as e:
        out["error"] = "ssl: " + (e.reason or str(e))
    except OSError as e:
        out["error"] = "os: " + str(e)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

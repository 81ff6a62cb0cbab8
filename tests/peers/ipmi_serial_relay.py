"""The host serial port behind the ipmi-bmc peer's Serial-over-LAN.

ipmi_sim connects to DEVICE_PORT as its SOL device (lan.conf `sol
"tcp:..."`); a test connects to CONSOLE_PORT and plays the host: what it
writes appears as serial output in the SOL session, and keystrokes typed in
the SOL session arrive here. Bytes written while one side is not connected
are dropped. The relay exits after TTL seconds.

Usage: ipmi_serial_relay.py DEVICE_PORT CONSOLE_PORT READY_FILE TTL
READY_FILE is created once ipmi_sim has connected.
"""

import selectors
import socket
import sys
import time


def listener(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1)
    return sock


def main():
    device_port, console_port, ready_file, ttl = (
        int(sys.argv[1]),
        int(sys.argv[2]),
        sys.argv[3],
        float(sys.argv[4]),
    )
    listeners = {"device": listener(device_port), "console": listener(console_port)}
    peers = {"device": None, "console": None}
    other = {"device": "console", "console": "device"}
    selector = selectors.DefaultSelector()
    for side, sock in listeners.items():
        selector.register(sock, selectors.EVENT_READ, ("listen", side))

    deadline = time.monotonic() + ttl
    while time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1.0):
            kind, side = key.data
            if kind == "listen":
                conn, _ = key.fileobj.accept()
                if peers[side] is not None:
                    selector.unregister(peers[side])
                    peers[side].close()
                peers[side] = conn
                selector.register(conn, selectors.EVENT_READ, ("data", side))
                if side == "device":
                    open(ready_file, "w").close()
                continue
            try:
                data = key.fileobj.recv(4096)
            except OSError:
                data = b""
            if not data:
                selector.unregister(key.fileobj)
                key.fileobj.close()
                peers[side] = None
                continue
            target = peers[other[side]]
            if target is not None:
                try:
                    target.sendall(data)
                except OSError:
                    pass


if __name__ == "__main__":
    main()

# A WebSocket chat client for tests/it/chat_ws.rs, written with Python's `websockets`
# (not astrbot's code). Usage: python chat_ws_client.py MODE URL [ARG]
# Prints one JSON line per thing seen: {"recv": <event>} for each server message, then
# {"closed": code, "reason": ...} or {"done": ...}.
import json
import os
import sys
import time

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def out(obj):
    print(json.dumps(obj), flush=True)


def recv_all(ws, stop_after_end=True, limit=None, timeout=30):
    """Prints messages until `end` (or `limit` run events); returns the run events seen."""
    run_events = 0
    while True:
        msg = ws.recv(timeout=timeout)
        ev = json.loads(msg)
        out({"recv": ev})
        if ev.get("type") != "session_id":
            run_events += 1
        if limit is not None and run_events >= limit:
            return run_events
        if stop_after_end and ev.get("type") == "end":
            return run_events


def closed(e):
    rcvd = e.rcvd
    out({"closed": rcvd.code if rcvd else None, "reason": rcvd.reason if rcvd else None})


mode, url = sys.argv[1], sys.argv[2]
arg = sys.argv[3] if len(sys.argv) > 3 else None
headers = {}
if mode.endswith("-header"):
    headers["X-API-Key"] = arg
    mode = mode[: -len("-header")]
try:
    with connect(url, additional_headers=headers, open_timeout=10, max_size=None) as ws:
        if mode == "chat":
            ws.send(json.dumps({"username": "alice", "message": "hi", "session_id": "ws-1"}))
            recv_all(ws)
            out({"done": True})
        elif mode == "drop":
            # Vanish after `arg` run events: no close frame, the process just goes.
            ws.send(json.dumps({"username": "alice", "message": "hi", "session_id": "ws-drop"}))
            n = recv_all(ws, limit=int(arg))
            out({"dropped_after": n})
            sys.stdout.flush()
            os._exit(0)
        elif mode == "messages":
            # Each line of the argument is one frame sent; one reply read per frame.
            for frame in json.loads(arg):
                ws.send(frame)
                out({"recv": json.loads(ws.recv(timeout=10))})
            out({"done": True})
        elif mode == "busy":
            ws.send(json.dumps({"username": "alice", "message": "hi", "session_id": "ws-busy"}))
            first = json.loads(ws.recv(timeout=10))
            out({"recv": first})
            ws.send(json.dumps({"username": "alice", "message": "again"}))
            recv_all(ws)
            out({"done": True})
        elif mode == "big":
            ws.send("x" * int(arg))
            recv_all(ws, timeout=10)
        elif mode == "wait":
            # Prints what arrives until the server closes, at most `arg` seconds.
            out({"open": True})
            started = time.monotonic()
            try:
                while True:
                    left = float(arg) - (time.monotonic() - started)
                    out({"recv": json.loads(ws.recv(timeout=max(left, 0.01)))})
            except ConnectionClosed as e:
                out({"elapsed": time.monotonic() - started})
                raise
            except TimeoutError:
                out({"done": "nothing happened"})
        elif mode == "hold":
            # Opens `arg` connections (this one included) and holds them until stdin closes.
            extra = [connect(url, open_timeout=10) for _ in range(int(arg) - 1)]
            out({"held": len(extra) + 1})
            sys.stdin.read()
            for c in extra:
                c.close()
            out({"done": True})
        else:
            out({"error": "unknown mode " + mode})
except ConnectionClosed as e:
    closed(e)
except Exception as e:  # the handshake refused, a timeout...
    out({"failed": type(e).__name__, "detail": str(e)})

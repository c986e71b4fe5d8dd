#!/usr/bin/env python3
"""The dice plugin: the command /roll [sides] and the LLM tool roll_dice.

One long-lived process: astrbot writes JSON-RPC requests to stdin, one per line,
and reads one answer per line from stdout. Logs go to stderr.
"""
import json
import random
import sys

config = {}  # from initialize: the saved config, or the schema's defaults


def roll(sides):
    """A roll of a die with `sides` sides; 0 or none means the configured default."""
    sides = int(sides or config.get("default_sides", 6))
    if not 1 <= sides <= 1000:
        raise ValueError(f"a die has 1 to 1000 sides, not {sides}")
    return sides, random.randint(1, sides)


def handle(method, params):
    global config
    if method == "initialize":
        config = params.get("config", {})
        print(f"dice: started with {config}", file=sys.stderr, flush=True)
        return {"protocol_version": 1}
    if method == "command/invoke" and params["handler"] == "roll":
        sides, value = roll(params["args"].get("sides"))
        return {"text": f"🎲 d{sides}: {value}"}
    if method == "tools/call" and params["name"] == "roll_dice":
        sides, value = roll(params["arguments"].get("sides"))
        return {"content": [{"type": "text", "text": f"rolled {value} on a d{sides}"}], "isError": False}
    raise LookupError(f"unknown method {method}")


def main():
    for line in sys.stdin:
        message = json.loads(line)
        if "id" not in message:  # a notification: initialized, notifications/cancelled, shutdown
            if message.get("method") == "shutdown":
                break
            continue
        answer = {"jsonrpc": "2.0", "id": message["id"]}
        try:
            answer["result"] = handle(message["method"], message.get("params", {}))
        except Exception as e:  # the chat shows the message
            answer["error"] = {"code": -32000, "message": str(e)}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()

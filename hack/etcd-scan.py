#!/usr/bin/env python3
"""Reads etcd's whole keyspace (through its HTTP gateway) and counts occurrences of strings.

usage: etcd-scan.py [--control TEXT] ENDPOINT STRING...
Exits 1 when any STRING is found, raw or base64-encoded. --control names a string that must be
found: proof that the scan really reads the stored objects.
"""
import base64
import json
import sys
import urllib.request


def main() -> int:
    args = sys.argv[1:]
    control = None
    if args[:1] == ["--control"]:
        control, args = args[1], args[2:]
    endpoint, needles = args[0], args[1:]
    body = json.dumps({"key": base64.b64encode(b"\0").decode(), "range_end": base64.b64encode(b"\0").decode()})
    req = urllib.request.Request(f"{endpoint}/v3/kv/range", data=body.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        kvs = json.load(resp).get("kvs", [])
    values = [base64.b64decode(kv.get("value", "")) for kv in kvs]
    total = sum(len(v) for v in values)
    hits = 0
    for needle in needles:
        forms = {needle.encode(), base64.b64encode(needle.encode())}
        n = sum(v.count(f) for v in values for f in forms)
        hits += n
        print(f"  {needle[:8]}…: {n} occurrence(s)")
    print(f"scanned {len(kvs)} etcd keys ({total} bytes): {hits} occurrence(s) in total")
    if control is not None:
        seen = sum(v.count(control.encode()) for v in values)
        print(f"control: {control!r} found {seen} time(s)")
        if not seen:
            print("the control string was not found: the scan is not reading the data")
            return 2
    return 1 if hits else 0


if __name__ == "__main__":
    sys.exit(main())

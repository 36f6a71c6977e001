#!/usr/bin/env python3
"""Instant -> ACCEPT-acknowledged lateness of `agora bench cron` runs (docs/BENCHMARKS.md).

Reads the JSON log of `agora --log-format json bench cron` run with
RUST_LOG=...,agora_cron::launch=debug; assumes identical starts and --every PT1M.
"""
import json, sys, re, datetime
first_ms = None; vals = []
for line in open(sys.argv[1]):
    if not line.startswith('{'): continue
    v = json.loads(line)
    if v.get('message') == 'creating the jobs':
        first_ms = int(datetime.datetime.fromisoformat(v['first'].replace('Z','+00:00')).timestamp()*1000)
    if v.get('message') == 'task launched':
        job, anchor, seq, attempt = v['task'].rsplit('.', 3)
        launched_ms = int(anchor) + v['lateness_ms']
        vals.append(launched_ms - (first_ms + int(seq)*60000))
vals.sort()
n = len(vals)
pct = lambda p: vals[min(n-1, int(p*n))]
print(f"n={n} min={vals[0]} p50={pct(0.5)} p99={pct(0.99)} max={vals[-1]} ms")

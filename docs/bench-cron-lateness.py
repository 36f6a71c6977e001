#!/usr/bin/env python3
"""Instant -> ACCEPT-acknowledged lateness of `agora bench cron` runs (docs/BENCHMARKS.md).

Reads the JSON log of `agora --log-format json bench cron` run with
RUST_LOG=...,agora_cron::launch=debug: one "task launched" line per task of an
ACCEPT the master acknowledged, with its scheduled instant and lateness, and one
"launch step" line per step that launched: its store write, the ACCEPTs sent
while it was written (armed instants) and the calls after it, in ms.
Counts only first launches of scheduled instants inside the bench's window.
"""
import datetime, json, sys

def ts(text):
    return datetime.datetime.fromisoformat(text.replace('Z', '+00:00'))

def pct(vals, p):
    return vals[min(len(vals) - 1, int(p * len(vals)))]

def summary(name, vals):
    vals = sorted(vals)
    if not vals:
        return f"{name}: none"
    return (f"{name}: n={len(vals)} min={vals[0]:.0f} p50={pct(vals, 0.5):.0f} "
            f"p99={pct(vals, 0.99):.0f} max={vals[-1]:.0f} ms")

window = None
lateness = {}
writes, early, after = [], [], []
for line in open(sys.argv[1]):
    if not line.startswith('{'):
        continue
    v = json.loads(line)
    fields = v.get('fields', v)
    message = fields.get('message')
    if message == 'creating the jobs':
        window = (ts(fields['first']), ts(fields['end']))
    elif message == 'task launched':
        task = fields['task']
        # The first launch of each task id (a relaunch keeps its id and is not counted).
        if task.endswith('.0') and task not in lateness:
            lateness[task] = (fields['scheduled_at'], float(fields['lateness_ms']))
    elif message == 'launch step':
        writes.append(float(fields['write_ms']))
        if 'early_calls_ms' in fields:
            early.append(float(fields['early_calls_ms']))
            after.append(float(fields['calls_after_write_ms']))

vals = [ms for at, ms in lateness.values() if window is None or window[0] <= ts(at) < window[1]]
print(summary("instant -> ACCEPT acknowledged", vals))
print(summary("launch steps: store write", writes))
print(summary("launch steps: ACCEPTs sent with the write", early))
print(summary("launch steps: calls after the write", after))

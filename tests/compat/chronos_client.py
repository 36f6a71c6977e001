#!/usr/bin/env python3
"""Drives Agora's cron framework with the unchanged chronos-python 1.2.1 client.

Usage: chronos_client.py HOST:PORT

Runs the same scenario twice: with the client's default `/v1` prefix, and without a
prefix (`scheduler_api_version=None`, where the client also sends PUT for updates and
requires the legacy `async` field). Each scenario adds a scheduled job and a dependent
job, lists and searches them, runs the parent now and waits until the parent and then the
child have succeeded, reads the job's stats, the scheduler stats, the graph and the
metrics, updates a job, kills its tasks, sends a bad job (ChronosAPIError; the raw answer
is 400 `{"status", "message"}` naming the field), and deletes both jobs.

Exits 0 and prints "ok" when every check passes; otherwise raises (non-zero exit).
"""

import json
import logging
import sys
import time
import urllib.error
import urllib.request

import chronos

WAIT_SECONDS = 90


class Messages(logging.Handler):
    """Keeps what the client logs: its ChronosAPIError carries only a generic text, the
    API's message is logged first."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record.getMessage())


MESSAGES = Messages()
logging.getLogger("chronos").addHandler(MESSAGES)
logging.getLogger("chronos").setLevel(logging.DEBUG)


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def job_def(name, command, **extra):
    job = {
        "name": name,
        "command": command,
        "owner": "ops@example.com",
        "disabled": False,
        # Required by the client without the /v1 prefix (Chronos < 3's field).
        "async": False,
        "cpus": 0.1,
        "mem": 32,
        "retries": 0,
    }
    job.update(extra)
    return job


def by_name(jobs, name):
    found = [j for j in jobs if j["name"] == name]
    check(len(found) == 1, "exactly one job %s in %s" % (name, [j["name"] for j in jobs]))
    return found[0]


def wait_for(what, probe):
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.2)


def raw(address, method, path, body=None):
    """A request outside the client, for the exact status and error body."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        "http://%s%s" % (address, path), data=data, method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scenario(address, version):
    label = version or "none"
    prefix = "/%s" % version if version else ""
    client = chronos.connect([address], scheduler_api_version=version)
    parent = "compat-%s-extract" % label
    child = "compat-%s-load" % label

    # A scheduled job far in the future (runs only when started by hand) and its child.
    client.add(job_def(parent, "echo extract", schedule="R/2099-01-01T00:00:00Z/P1D",
                       scheduleTimeZone="UTC"))
    client.add(job_def(child, "echo load", parents=[parent]))

    jobs = client.list()
    p = by_name(jobs, parent)
    c = by_name(jobs, child)
    check(p["schedule"] == "R/2099-01-01T00:00:00Z/P1D", "schedule kept: %r" % p)
    check(c["parents"] == [parent], "parents kept: %r" % c)
    for field in ("successCount", "errorCount", "lastSuccess", "lastError"):
        check(field in p, "%s in the job JSON: %r" % (field, p))
    check(p["successCount"] == 0 and p["lastSuccess"] == "", "a fresh job: %r" % p)

    # Search: case-insensitive substrings, as Chronos.
    found = client.search(name=parent.upper())
    check([j["name"] for j in found] == [parent], "search by name: %r" % found)
    found = client.search(command="ECHO LOAD")
    check(child in [j["name"] for j in found], "search by command: %r" % found)
    check(parent not in [j["name"] for j in found], "search by command excludes: %r" % found)

    # Run now; the parent's success starts the child.
    check(client.run(parent) is None, "run answers 204")
    wait_for(parent + " succeeded",
             lambda: by_name(client.list(), parent)["successCount"] >= 1)
    wait_for(child + " succeeded after its parent",
             lambda: by_name(client.list(), child)["successCount"] >= 1)
    p = by_name(client.list(), parent)
    check(p["lastSuccess"] != "" and p["errorCount"] == 0, "counters after a run: %r" % p)

    # Stats.
    stat = client.job_stat(parent)
    check(stat["histogram"]["count"] >= 1, "job stat histogram: %r" % stat)
    for key in ("75thPercentile", "95thPercentile", "98thPercentile", "99thPercentile",
                "median", "mean"):
        check(key in stat["histogram"], "%s in the histogram: %r" % (key, stat))
    check(len(stat["taskStatHistory"]) >= 1, "task history: %r" % stat)
    check(stat["taskStatHistory"][0]["status"] == "Success", "task status: %r" % stat)
    for ranked in (client.scheduler_stat_99th(), client.scheduler_stat_98th(),
                   client.scheduler_stat_95th(), client.scheduler_stat_75th(),
                   client.scheduler_stat_median(), client.scheduler_stat_mean()):
        check(parent in [r["jobNameLabel"] for r in ranked], "stats list: %r" % ranked)
        check(all(isinstance(r["time"], float) for r in ranked), "times: %r" % ranked)

    # Graph and metrics.
    graph = client.scheduler_graph()
    check(isinstance(graph, str), "graph csv is text: %r" % graph)
    check("link,%s,%s" % (parent, child) in graph.splitlines(), "edge in the csv: %r" % graph)
    metrics = client.metrics()
    check("agora_cron_jobs" in metrics, "metrics text: %r" % metrics[:200])

    # Update (POST with /v1, PUT without a prefix).
    client.update(job_def(parent, "echo extract v2", schedule="R/2099-01-01T00:00:00Z/P1D"))
    check(by_name(client.list(), parent)["command"] == "echo extract v2", "updated")

    check(client.delete_tasks(parent) is None, "kill tasks answers 204")

    # A bad job: the client raises; the API answered 400 with a message naming the field.
    MESSAGES.records.clear()
    try:
        client.add(job_def("bad name!", "true", schedule="R/2099-01-01T00:00:00Z/P1D"))
        raise AssertionError("a bad job name was accepted")
    except chronos.ChronosAPIError:
        pass
    check(any("name" in m for m in MESSAGES.records), "the logged message names the field: %r"
          % MESSAGES.records)
    status, body = raw(address, "POST", prefix + "/scheduler/iso8601",
                       job_def("ok-name", "true", schedule="not a schedule"))
    check(status == 400, "bad schedule status: %d %s" % (status, body))
    error = json.loads(body)
    check(set(error) == {"status", "message"}, "error shape: %r" % error)
    check("schedule" in error["message"], "the message names the field: %r" % error)
    check("ok-name" not in [j["name"] for j in client.list()], "nothing stored")

    # Unknown job.
    try:
        client.run("compat-no-such-job")
        raise AssertionError("running an unknown job succeeded")
    except chronos.ChronosAPIError:
        pass

    # Delete (child first: a parent with children may be refused).
    check(client.delete(child) is None, "delete answers 204")
    check(client.delete(parent) is None, "delete answers 204")
    names = [j["name"] for j in client.list()]
    check(parent not in names and child not in names, "deleted: %r" % names)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: chronos_client.py HOST:PORT")
    address = sys.argv[1]
    for version in ("v1", None):
        scenario(address, version)
        print("scenario %s: ok" % (version or "no prefix"), flush=True)
    print("ok")


if __name__ == "__main__":
    main()

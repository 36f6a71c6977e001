#!/usr/bin/env python3
"""The marathon Python client (0.13, from PyPI, unchanged) against Agora's
service framework.

    python3 tests/compat/marathon_client.py http://127.0.0.1:8080

The framework must run on a cluster with one agent whose hostname is unique
and which has room for a few small `sleep` tasks. Every step prints `ok: …`;
the first failure raises and the script exits non-zero.

The client's JSON encoder uses `collections.Iterable`, which Python 3.10
removed; the shim below restores the alias (the client's files stay as
PyPI ships them).
"""

import collections
import collections.abc
import datetime
import queue
import sys
import threading
import time

if not hasattr(collections, "Iterable"):
    collections.Iterable = collections.abc.Iterable

from marathon import MarathonApp, MarathonClient  # noqa: E402
from marathon.exceptions import ConflictError, MarathonHttpError, NotFoundError  # noqa: E402
from marathon.models.deployment import MarathonDeployment, MarathonDeploymentStep  # noqa: E402
from marathon.models.events import (  # noqa: E402
    MarathonApiPostEvent,
    MarathonDeploymentInfo,
    MarathonDeploymentSuccess,
    MarathonEventStreamAttached,
    MarathonStatusUpdateEvent,
)
from marathon.models.queue import MarathonQueueItem  # noqa: E402
from marathon.util import to_datetime  # noqa: E402

WAIT_SECONDS = 60
APP = "/compat/sleeper"
UNIQUE = "/compat/unique"


def step(message):
    print(f"ok: {message}", flush=True)


def wait_until(what, probe, timeout=WAIT_SECONDS):
    """Calls `probe` every 0.2 s until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (MarathonHttpError, NotFoundError) as e:
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def no_deployment_of(client, app_id):
    return all(app_id not in (d.affected_apps or []) for d in client.list_deployments())


def settled(client, app_id, instances):
    """The app runs `instances` tasks, all launched since its last
    configuration change, and no deployment changes it."""

    def probe():
        app = client.get_app(app_id)
        running = [t for t in app.tasks if t.state == "TASK_RUNNING"]
        config_at = app.version_info.last_config_change_at
        current = [t for t in running if to_datetime(t.version) >= config_at]
        done = no_deployment_of(client, app_id)
        ok = app.instances == instances and len(app.tasks) == instances and len(current) == instances and done
        return app if ok else None

    return wait_until(f"{app_id} to run {instances} tasks of its current version", probe)


class EventCollector:
    """Reads the client's event stream on a thread into a queue."""

    def __init__(self, client, event_types=None):
        self.events = queue.Queue()
        self.seen = []
        thread = threading.Thread(target=self._run, args=(client, event_types), daemon=True)
        thread.start()

    def _run(self, client, event_types):
        try:
            for event in client.event_stream(event_types=event_types):
                self.events.put(event)
        except Exception as e:  # reported by the reader
            self.events.put(e)

    def next(self, timeout=WAIT_SECONDS):
        event = self.events.get(timeout=timeout)
        if isinstance(event, Exception):
            raise AssertionError(f"the event stream failed: {event!r}")
        self.seen.append(event)
        return event

    def drain(self):
        while True:
            try:
                self.next(timeout=0.5)
            except queue.Empty:
                return self.seen

    def wait_for(self, cls, predicate=lambda e: True, timeout=WAIT_SECONDS):
        for event in self.seen:
            if isinstance(event, cls) and predicate(event):
                return event
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.next(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if isinstance(event, cls) and predicate(event):
                return event
        raise AssertionError(f"no {cls.__name__} event; saw {[type(e).__name__ for e in self.seen]}")


def expect_http_error(cls, status, call):
    try:
        call()
    except cls as e:
        assert e.status_code == status, f"expected HTTP {status}, got {e.status_code}: {e}"
        return e
    raise AssertionError(f"expected {cls.__name__} (HTTP {status}), the call succeeded")


def main(base):
    client = MarathonClient(base, timeout=10)

    # The event stream first, so it sees everything below.
    events = EventCollector(client)
    attached = events.next(timeout=10)
    assert isinstance(attached, MarathonEventStreamAttached), attached
    step("event stream attached")
    successes = EventCollector(client, event_types=["deployment_success"])

    assert client.ping() == b"pong"
    info = client.get_info()
    assert info.name and info.version, info
    assert client.get_leader()["leader"], "a leader"
    metrics = client.get_metrics()
    assert "gauges" in metrics, metrics
    step("ping, info, leader, metrics")

    # Create.
    created = client.create_app(
        APP, MarathonApp(cmd="sleep 1000", cpus=0.1, mem=16, instances=1, labels={"suite": "compat"})
    )
    assert created.id == APP, created
    assert created.cmd == "sleep 1000"
    assert created.deployments and isinstance(created.deployments[0], MarathonDeployment), created.deployments
    step("create_app")
    app = settled(client, APP, 1)
    task = app.tasks[0]
    assert task.app_id == APP and task.host, task
    assert isinstance(task.started_at, datetime.datetime) and isinstance(task.staged_at, datetime.datetime)
    assert app.tasks_running == 1, app.tasks_running
    assert app.version_info.last_config_change_at is not None
    step("the app runs one task")

    # List, with filters and embeds.
    ids = [a.id for a in client.list_apps()]
    assert APP in ids, ids
    embedded = [a for a in client.list_apps(embed_tasks=True, embed_counts=True, embed_task_stats=True) if a.id == APP]
    assert embedded and len(embedded[0].tasks) == 1 and embedded[0].tasks_running == 1, embedded
    assert [a.id for a in client.list_apps(app_id="sleeper")] == [APP]
    assert [a.id for a in client.list_apps(cmd="sleep 1000")] == [APP]
    assert [a.id for a in client.list_apps(label="suite==compat")] == [APP]
    assert client.list_apps(label="suite==other") == []
    tasks = client.list_tasks(APP)
    assert [t.id for t in tasks] == [task.id], tasks
    assert task.id in [t.id for t in client.list_tasks()]
    endpoints = client.list_endpoints()
    assert any(e.task_id == task.id for e in endpoints), endpoints
    step("list_apps (filters, embeds), get_app, list_tasks, list_endpoints")

    # Scale.
    result = client.scale_app(APP, instances=3)
    assert result["deploymentId"] and result["version"], result
    app = settled(client, APP, 3)
    step("scale_app to 3")

    # Kill with scale: by id (POST /v2/tasks/delete), then one through the app.
    first, second = app.tasks[0].id, app.tasks[1].id
    assert client.kill_given_tasks([first], scale=True) is True
    app = settled(client, APP, 2)
    assert first not in [t.id for t in app.tasks]
    answer = client.kill_task(APP, second, scale=True)
    assert answer["deploymentId"], answer
    app = settled(client, APP, 1)
    assert second not in [t.id for t in app.tasks]
    step("kill_given_tasks and kill_task with scale")

    # Kill without scale: the task is replaced.
    doomed = app.tasks[0].id
    killed = client.kill_task(APP, doomed)
    assert killed.id == doomed, killed
    wait_until("a replacement task", lambda: [t for t in client.get_app(APP).tasks
                                             if t.id != doomed and t.state == "TASK_RUNNING"])
    app = settled(client, APP, 1)
    step("kill_task without scale: the task is replaced")

    # Kill every task with scale (DELETE /v2/apps/{id}/tasks?scale=true).
    answer = client.kill_tasks(APP, scale=True)
    assert answer["deploymentId"], answer
    settled(client, APP, 0)
    client.scale_app(APP, instances=1)
    app = settled(client, APP, 1)
    step("kill_tasks with scale, then scale back")

    # Update: read the app, change it, send it back (read-only fields and all).
    versions_before = client.list_versions(APP)
    app = client.get_app(APP)
    app.cmd = "sleep 2000"
    result = client.update_app(APP, app)
    assert result["deploymentId"], result
    app = settled(client, APP, 1)
    assert app.cmd == "sleep 2000", app.cmd
    versions = client.list_versions(APP)
    assert len(versions) > len(versions_before), (versions_before, versions)
    step("update_app with the app as read (cmd changed, rolled)")

    # Rollback to the first version's configuration.
    original = next(v for v in versions if client.get_version(APP, v).cmd == "sleep 1000")
    result = client.rollback_app(APP, original)
    assert result["deploymentId"], result
    app = settled(client, APP, 1)
    assert app.cmd == "sleep 1000", app.cmd
    step("get_version and rollback_app")

    # Restart.
    old_task = app.tasks[0].id
    result = client.restart_app(APP)
    assert result["deploymentId"], result
    wait_until("the restart to replace the task", lambda: old_task not in [t.id for t in client.get_app(APP).tasks])
    settled(client, APP, 1)
    step("restart_app")

    # A deployment that cannot finish: two instances, one per host, one host.
    unique = MarathonApp(cmd="sleep 1000", cpus=0.1, mem=16, instances=2)
    unique.constraints = [["hostname", "UNIQUE"]]
    client.create_app(UNIQUE, unique)
    deployment = wait_until(
        "the deployment of the unique app",
        lambda: next((d for d in client.list_deployments() if UNIQUE in d.affected_apps), None),
    )
    assert deployment.total_steps >= 1 and deployment.current_step >= 1, deployment
    assert deployment.steps and isinstance(deployment.steps[0], MarathonDeploymentStep), deployment.steps
    assert deployment.current_actions and deployment.current_actions[0].app == UNIQUE, deployment.current_actions
    step("list_deployments shows the running deployment")
    item = wait_until(
        "the unplaced instance in the queue",
        lambda: next((q for q in client.list_queue() if q.app.id == UNIQUE), None),
    )
    assert isinstance(item, MarathonQueueItem) and item.count == 1, item
    assert item.delay.time_left_seconds is not None
    step("list_queue shows the instance that cannot be placed")
    conflict = expect_http_error(ConflictError, 409, lambda: client.scale_app(UNIQUE, instances=1))
    assert "deploy" in conflict.error_message.lower() or conflict.error_message, conflict
    client.scale_app(UNIQUE, instances=1, force=True)
    settled(client, UNIQUE, 1)
    wait_until("the queue to empty", lambda: not [q for q in client.list_queue() if q.app.id == UNIQUE] or None)
    step("a change during a deployment is 409; force=True supersedes it")

    # Groups derived from the ids.
    groups = client.list_groups()
    compat = next(g for g in groups if g.id == "/compat")
    assert sorted(a.id for a in compat.apps) == [APP, UNIQUE], compat.apps
    assert sorted(a.id for a in client.get_group("/compat").apps) == [APP, UNIQUE]
    step("list_groups and get_group")

    # Bad input.
    error = expect_http_error(
        MarathonHttpError, 422, lambda: client.create_app("/compat/bad", MarathonApp(cmd="sleep 1", cpus=-1))
    )
    assert any(d["path"] == "/cpus" for d in error.error_details), error.error_details
    assert "/compat/bad" not in [a.id for a in client.list_apps()]
    missing = expect_http_error(NotFoundError, 404, lambda: client.get_app("/compat/nope"))
    assert missing.error_message == "App '/compat/nope' does not exist", missing.error_message
    expect_http_error(ConflictError, 409, lambda: client.create_app(APP, MarathonApp(cmd="sleep 1")))
    step("invalid app is 422 with details, unknown app 404, duplicate 409")

    # Delete.
    assert client.delete_app(UNIQUE)["deploymentId"]
    assert client.delete_app(APP)["deploymentId"]
    wait_until("the apps to be gone", lambda: not [a for a in client.list_apps() if a.id.startswith("/compat/")])
    expect_http_error(NotFoundError, 404, lambda: client.get_app(APP))
    wait_until("every task to be gone", lambda: not [t for t in client.list_tasks() if t.app_id.startswith("/compat/")])
    step("delete_app")

    # The event stream saw the API, the tasks and the deployments.
    events.wait_for(MarathonApiPostEvent, lambda e: e.uri == "/v2/apps")
    events.wait_for(MarathonStatusUpdateEvent, lambda e: e.app_id == APP and e.task_status == "TASK_RUNNING")
    events.wait_for(MarathonDeploymentInfo)
    events.wait_for(MarathonDeploymentSuccess)
    successes.wait_for(MarathonDeploymentSuccess)
    only = {type(e) for e in successes.drain()}
    assert only == {MarathonDeploymentSuccess}, only
    step("event_stream: api_post, status_update, deployment_info, deployment_success; event_types filters")

    print("all marathon client checks passed", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: marathon_client.py BASE_URL")
    main(sys.argv[1])

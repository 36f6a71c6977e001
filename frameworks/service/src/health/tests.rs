//! Probes against real loopback servers and processes, and the monitor end to end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::probe::{Probe, command_env};
use super::*;
use crate::app::CommandCheck;

const SECOND: Duration = Duration::from_secs(1);

/// A loopback HTTP responder answering every request with the current status
/// (0 = read the request and never answer); counts requests.
struct Responder {
    port: u16,
    status: Arc<AtomicU16>,
    requests: Arc<AtomicUsize>,
    server: JoinHandle<()>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn responder(status: u16) -> Responder {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let status = Arc::new(AtomicU16::new(status));
    let requests = Arc::new(AtomicUsize::new(0));
    let (shared_status, shared_requests) = (Arc::clone(&status), Arc::clone(&requests));
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let status = shared_status.load(Ordering::SeqCst);
            shared_requests.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                if status == 0 {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
                let head = format!(
                    "HTTP/1.1 {status} X\r\nLocation: /elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = conn.write_all(head.as_bytes()).await;
            });
        }
    });
    Responder {
        port,
        status,
        requests,
        server,
    }
}

fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())
}

async fn http_probe(port: u16, ignore_http1xx: bool, timeout: Duration) -> ProbeOutcome {
    Probe::http("127.0.0.1", port, "/health", ignore_http1xx)
        .run(timeout, &client())
        .await
}

async fn command_probe(value: &str, env: Vec<(String, String)>, timeout: Duration) -> ProbeOutcome {
    let probe = Probe::Command {
        value: value.to_owned(),
        env,
    };
    probe.run(timeout, &client()).await
}

fn is_failure(outcome: &ProbeOutcome, needle: &str) -> bool {
    matches!(outcome, ProbeOutcome::Unhealthy(cause) if cause.contains(needle))
}

/// A port nothing listens on (bound, then released).
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn http_200_is_healthy() {
    let server = responder(200).await;
    assert_eq!(
        http_probe(server.port, false, SECOND).await,
        ProbeOutcome::Healthy
    );
}

#[tokio::test]
async fn http_redirect_is_healthy_and_not_followed() {
    let server = responder(302).await;
    assert_eq!(
        http_probe(server.port, false, SECOND).await,
        ProbeOutcome::Healthy
    );
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn http_500_is_a_failure_naming_the_status() {
    let server = responder(500).await;
    let outcome = http_probe(server.port, false, SECOND).await;
    assert!(is_failure(&outcome, "HTTP 500"), "{outcome:?}");
}

#[tokio::test]
async fn http_answer_later_than_the_timeout_is_a_failure() {
    let server = responder(0).await;
    let begun = Instant::now();
    let outcome = http_probe(server.port, false, SECOND).await;
    assert!(is_failure(&outcome, "timed out"), "{outcome:?}");
    assert!(begun.elapsed() < 3 * SECOND);
}

#[tokio::test]
async fn http_1xx_is_discarded_with_ignore_http1xx() {
    let server = responder(101).await;
    assert_eq!(http_probe(server.port, true, SECOND).await, ProbeOutcome::Ignored);
}

#[tokio::test]
async fn http_1xx_is_a_failure_without_ignore_http1xx() {
    let server = responder(101).await;
    let outcome = http_probe(server.port, false, SECOND).await;
    assert!(matches!(outcome, ProbeOutcome::Unhealthy(_)), "{outcome:?}");
}

#[tokio::test]
async fn http_refused_connection_is_a_failure() {
    let port = closed_port().await;
    let outcome = http_probe(port, false, SECOND).await;
    assert!(is_failure(&outcome, "failed"), "{outcome:?}");
}

#[tokio::test]
async fn tcp_listener_is_healthy() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let probe = Probe::Tcp {
        host: "127.0.0.1".to_owned(),
        port,
    };
    assert_eq!(probe.run(SECOND, &client()).await, ProbeOutcome::Healthy);
}

#[tokio::test]
async fn tcp_closed_port_is_a_failure() {
    let port = closed_port().await;
    let probe = Probe::Tcp {
        host: "127.0.0.1".to_owned(),
        port,
    };
    let outcome = probe.run(SECOND, &client()).await;
    assert!(is_failure(&outcome, "TCP connect"), "{outcome:?}");
}

#[tokio::test]
async fn command_exit_0_is_healthy() {
    assert_eq!(command_probe("true", vec![], SECOND).await, ProbeOutcome::Healthy);
}

#[tokio::test]
async fn command_nonzero_exit_is_a_failure_quoting_stderr() {
    let outcome = command_probe("echo broken >&2; false", vec![], SECOND).await;
    assert!(is_failure(&outcome, "exit status: 1: broken"), "{outcome:?}");
}

#[tokio::test]
async fn command_is_killed_at_the_timeout_with_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = format!("sleep 5 & echo $! > {}; wait", pid_file.display());
    let begun = Instant::now();
    let outcome = command_probe(&script, vec![], SECOND).await;
    assert!(is_failure(&outcome, "timed out"), "{outcome:?}");
    assert!(begun.elapsed() < 3 * SECOND);
    let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_owned();
    assert_process_ends(&pid, 2 * SECOND).await;
}

#[tokio::test]
async fn command_sees_host_ports_and_task_env() {
    let env = command_env(
        "host1",
        &[31005, 31006],
        &[("GREETING".to_owned(), "hi".to_owned())],
    );
    let script = r#"test "$HOST" = host1 && test "$PORT0" = 31005 && test "$PORT1" = 31006 \
        && test "$PORT" = 31005 && test "$PORTS" = 31005,31006 && test "$GREETING" = hi"#;
    assert_eq!(command_probe(script, env, SECOND).await, ProbeOutcome::Healthy);
}

fn target(ports: Vec<u16>, started_at: Instant) -> CheckTarget {
    CheckTarget {
        task_id: TaskId::new_unchecked("web.1"),
        app_id: AppId::parse("/shop/web").unwrap(),
        version: "2026-11-22T10:00:00Z".parse().unwrap(),
        host: "127.0.0.1".to_owned(),
        ports,
        env: vec![],
        started_at,
    }
}

fn check(protocol: HealthCheckProtocol) -> HealthCheck {
    HealthCheck {
        protocol,
        ..HealthCheck::default()
    }
}

#[tokio::test]
async fn probe_uses_the_port_at_port_index() {
    let mut http = check(HealthCheckProtocol::Http);
    http.port_index = Some(1);
    http.path = Some("/ready".to_owned());
    assert_eq!(
        probe_for(&http, &target(vec![31000, 31001], Instant::now())),
        Probe::http("127.0.0.1", 31001, "/ready", false)
    );
}

#[tokio::test]
async fn probe_prefers_the_fixed_port() {
    let mut tcp = check(HealthCheckProtocol::Tcp);
    tcp.port = Some(8080);
    tcp.port_index = Some(1);
    assert_eq!(
        probe_for(&tcp, &target(vec![31000, 31001], Instant::now())),
        Probe::Tcp {
            host: "127.0.0.1".to_owned(),
            port: 8080
        }
    );
}

#[tokio::test]
async fn probe_with_a_port_index_the_task_lacks_always_fails() {
    let mut tcp = check(HealthCheckProtocol::Tcp);
    tcp.port_index = Some(2);
    let probe = probe_for(&tcp, &target(vec![31000], Instant::now()));
    assert!(
        matches!(&probe, Probe::Unavailable(cause) if cause.contains("portIndex 2")),
        "{probe:?}"
    );
}

#[tokio::test]
async fn https_checks_fail_saying_tls_is_unsupported() {
    let probe = probe_for(
        &check(HealthCheckProtocol::Https),
        &target(vec![31000], Instant::now()),
    );
    assert!(
        matches!(&probe, Probe::Unavailable(cause) if cause.contains("HTTPS")),
        "{probe:?}"
    );
}

#[test]
fn http_url_brackets_ipv6_hosts_and_adds_the_leading_slash() {
    let Probe::Http { url, .. } = Probe::http("::1", 80, "ping", false) else {
        panic!()
    };
    assert_eq!(url, "http://[::1]:80/ping");
}

#[test]
fn result_serializes_as_marathon_health_check_result() {
    let result = HealthCheckResult {
        alive: true,
        consecutive_failures: 0,
        first_success: Some("2026-11-22T10:15:30.042917Z".parse().unwrap()),
        last_failure: None,
        last_success: Some("2026-11-22T10:16:30Z".parse().unwrap()),
        last_failure_cause: None,
        task_id: TaskId::new_unchecked("web.1"),
    };
    assert_eq!(
        serde_json::to_value(&result).unwrap(),
        serde_json::json!({
            "alive": true,
            "consecutiveFailures": 0,
            "firstSuccess": "2026-11-22T10:15:30.042Z",
            "lastFailure": null,
            "lastSuccess": "2026-11-22T10:16:30.000Z",
            "lastFailureCause": null,
            "taskId": "web.1",
        })
    );
}

/// Events until (and including) the first `Unhealthy`, each with when it came.
async fn events_until_unhealthy(
    events: &mut mpsc::UnboundedReceiver<HealthEvent>,
    limit: Duration,
) -> Vec<(Instant, HealthEvent)> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + limit;
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.recv()).await {
        let unhealthy = matches!(event, HealthEvent::Unhealthy { .. });
        seen.push((Instant::now(), event));
        if unhealthy {
            break;
        }
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn monitor_probes_first_right_after_the_grace_period_then_every_interval() {
    let (mut monitor, mut events) = HealthMonitor::new();
    let started = Instant::now();
    let mut https = check(HealthCheckProtocol::Https);
    https.grace_period_seconds = 10;
    https.interval_seconds = 5;
    https.max_consecutive_failures = 2;
    monitor.watch(target(vec![31000], started), vec![https]);
    let seen = events_until_unhealthy(&mut events, Duration::from_secs(60)).await;
    let times: Vec<Duration> = seen.iter().map(|(at, _)| at.duration_since(started)).collect();
    assert_eq!(
        times,
        vec![
            Duration::from_secs(10),
            Duration::from_secs(15),
            Duration::from_secs(15)
        ]
    );
    assert!(matches!(seen[2].1, HealthEvent::Unhealthy { .. }));
}

#[tokio::test]
async fn monitor_reports_changed_then_unhealthy_on_loopback() {
    let server = responder(200).await;
    let (mut monitor, mut events) = HealthMonitor::new();
    let mut http = check(HealthCheckProtocol::Http);
    http.grace_period_seconds = 0;
    http.interval_seconds = 1;
    http.timeout_seconds = 1;
    http.max_consecutive_failures = 2;
    let task = target(vec![server.port], Instant::now());
    let task_id = task.task_id.clone();
    assert_eq!(monitor.is_healthy(&task_id), None);
    monitor.watch(task, vec![http]);

    let first = tokio::time::timeout(3 * SECOND, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(first, HealthEvent::Changed { alive: true, .. }),
        "{first:?}"
    );
    assert_eq!(monitor.is_healthy(&task_id), Some(true));

    server.status.store(500, Ordering::SeqCst);
    let seen: Vec<HealthEvent> = events_until_unhealthy(&mut events, 6 * SECOND)
        .await
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    let kinds: Vec<&str> = seen
        .iter()
        .map(|e| match e {
            HealthEvent::Changed { alive: false, .. } => "down",
            HealthEvent::Changed { alive: true, .. } => "up",
            HealthEvent::Failed { .. } => "failed",
            HealthEvent::Unhealthy { .. } => "unhealthy",
        })
        .collect();
    assert_eq!(kinds, vec!["failed", "down", "failed", "unhealthy"]);
    assert!(matches!(&seen[3], HealthEvent::Unhealthy { cause, .. } if cause.contains("HTTP 500")));
    assert_eq!(monitor.is_healthy(&task_id), Some(false));
    let result = monitor.results(&task_id).pop().unwrap();
    assert_eq!(result.consecutive_failures, 2);
    assert!(result.first_success.is_some());
}

#[tokio::test]
async fn unwatch_stops_probing() {
    let server = responder(200).await;
    let (mut monitor, mut events) = HealthMonitor::new();
    let mut http = check(HealthCheckProtocol::Http);
    http.grace_period_seconds = 0;
    http.interval_seconds = 1;
    let task = target(vec![server.port], Instant::now());
    let task_id = task.task_id.clone();
    monitor.watch(task, vec![http]);
    tokio::time::timeout(3 * SECOND, events.recv())
        .await
        .unwrap()
        .unwrap();
    monitor.unwatch(&task_id);
    let probes = server.requests.load(Ordering::SeqCst);
    tokio::time::sleep(2 * SECOND + SECOND / 2).await;
    assert_eq!(server.requests.load(Ordering::SeqCst), probes);
    assert_eq!(monitor.is_healthy(&task_id), None);
    assert!(monitor.results(&task_id).is_empty());
}

/// Waits until process `pid` is gone (or a zombie awaiting its parent's reaping).
async fn assert_process_ends(pid: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").split_whitespace().next();
        if stat.is_empty() || state == Some("Z") {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} still runs: {stat}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `path` holds a line of text, and returns it.
async fn read_when_written(path: &std::path::Path) -> String {
    for _ in 0..100 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.ends_with('\n') {
            return text.trim().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} was never written", path.display());
}

#[tokio::test]
async fn unwatch_kills_a_running_command_check() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let (mut monitor, _events) = HealthMonitor::new();
    let mut command = check(HealthCheckProtocol::Command);
    command.grace_period_seconds = 0;
    command.timeout_seconds = 60;
    command.command = Some(CommandCheck {
        value: format!("sleep 30 & echo $! > {}; wait", pid_file.display()),
    });
    let task = target(vec![], Instant::now());
    let task_id = task.task_id.clone();
    monitor.watch(task, vec![command]);
    let pid = read_when_written(&pid_file).await;
    monitor.unwatch(&task_id);
    assert_process_ends(&pid, 2 * SECOND).await;
}

#[tokio::test]
async fn watching_without_checks_watches_nothing() {
    let (mut monitor, _events) = HealthMonitor::new();
    let task = target(vec![], Instant::now());
    let task_id = task.task_id.clone();
    monitor.watch(task, vec![]);
    assert!(!monitor.is_watched(&task_id));
    assert_eq!(monitor.is_healthy(&task_id), None);
}

#[tokio::test]
async fn command_check_in_the_monitor_sees_port0() {
    let (mut monitor, mut events) = HealthMonitor::new();
    let mut command = check(HealthCheckProtocol::Command);
    command.grace_period_seconds = 0;
    command.command = Some(CommandCheck {
        value: r#"test "$PORT0" = 31005"#.to_owned(),
    });
    monitor.watch(target(vec![31005], Instant::now()), vec![command]);
    let first = tokio::time::timeout(3 * SECOND, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(first, HealthEvent::Changed { alive: true, .. }),
        "{first:?}"
    );
}

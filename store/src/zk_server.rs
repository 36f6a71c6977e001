//! Test fixtures: a real standalone ZooKeeper server per test ([`ZkServer`])
//! and a TCP proxy that can cut one client off it ([`ZkProxy`]).
//!
//! Built for this crate's tests and, with the `zk-server` feature, for other
//! crates' tests. Needs Debian's `zookeeper` package (jars in
//! /usr/share/java) and a Java runtime.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

/// ZooKeeper's tick (ms): sessions may last 2 to 20 ticks (0.4–4 s).
pub const TICK_MS: u64 = 200;
/// How long a server gets to answer `srvr` after starting.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const JAVA_DIR: &str = "/usr/share/java";
/// What the server needs on its classpath (Debian's zookeeper package).
const JARS: &[&str] = &[
    "zookeeper.jar",
    "zookeeper-jute.jar",
    "slf4j-api.jar",
    "slf4j-simple.jar",
    "metrics-core.jar",
    "commons-io.jar",
    "snappy-java.jar",
    "netty-handler.jar",
    "netty-common.jar",
    "netty-buffer.jar",
    "netty-transport.jar",
    "netty-codec.jar",
    "netty-resolver.jar",
    "netty-transport-native-epoll.jar",
    "netty-transport-native-unix-common.jar",
];

fn other(message: String) -> std::io::Error {
    std::io::Error::other(message)
}

/// A standalone ZooKeeper on 127.0.0.1, its data in a temporary directory;
/// killed (SIGKILL) when dropped.
pub struct ZkServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for ZkServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkServer")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .field("pid", &self.pid())
            .finish()
    }
}

impl ZkServer {
    /// Starts a new server on a free port and waits until it answers.
    pub async fn launch() -> std::io::Result<ZkServer> {
        let mut last = None;
        for _ in 0..3 {
            let dir = tempfile::Builder::new().prefix("agora-zk-").tempdir()?;
            let port = free_port()?;
            let mut server = ZkServer {
                child: None,
                port,
                dir,
            };
            server.write_config()?;
            match server.start().await {
                Ok(()) => return Ok(server),
                // Most likely someone took the port meanwhile: try another.
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| other("ZooKeeper did not start".into())))
    }

    fn write_config(&self) -> std::io::Result<()> {
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        let config = format!(
            "tickTime={TICK_MS}\n\
             dataDir={}\n\
             clientPort={}\n\
             clientPortAddress=127.0.0.1\n\
             admin.enableServer=false\n\
             4lw.commands.whitelist=srvr,ruok,stat,cons\n\
             minSessionTimeout={}\n\
             maxSessionTimeout={}\n\
             maxClientCnxns=0\n",
            data.display(),
            self.port,
            2 * TICK_MS,
            20 * TICK_MS,
        );
        std::fs::write(self.config_path(), config)
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("zoo.cfg")
    }

    /// The server's log (stdout and stderr), for test failure messages.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("zookeeper.log")
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The data directory (kept across [`ZkServer::stop`] and [`ZkServer::start`]).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The client port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`, for clients.
    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `zk://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("zk://{}{path}", self.connect_string())
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the server (again) on the same port and data, and waits until
    /// it answers `srvr`. A no-op if it runs.
    pub async fn start(&mut self) -> std::io::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let classpath: Vec<String> = JARS.iter().map(|j| format!("{JAVA_DIR}/{j}")).collect();
        for jar in &classpath {
            if !Path::new(jar).exists() {
                return Err(other(format!(
                    "{jar} is missing: install Debian's zookeeper package (apt-get install zookeeper)"
                )));
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new("java")
            .args([
                "-Xms32m",
                "-Xmx192m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Dzookeeper.admin.enableServer=false",
                "-cp",
                &classpath.join(":"),
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            ])
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| other(format!("cannot run java for ZooKeeper: {e}")))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if srvr(self.port)
                .await
                .is_some_and(|answer| answer.contains("Mode:"))
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(other(format!(
                    "ZooKeeper exited ({status}) before answering:\n{}",
                    self.log_tail(30)
                )));
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(other(format!(
                    "ZooKeeper did not answer srvr on port {} within {START_TIMEOUT:?}:\n{}",
                    self.port,
                    self.log_tail(30)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the server (SIGKILL, like a crash; ZooKeeper's log is
    /// fsynced, so nothing acknowledged is lost) and waits until it is gone:
    /// every client is cut off until [`ZkServer::start`].
    pub async fn stop(&mut self) {
        self.kill();
        // The port is free once the process is gone; give the kernel a moment.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) -> std::io::Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) -> std::io::Result<()> {
        self.signal(Signal::SIGCONT)
    }

    fn signal(&self, signal: Signal) -> std::io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| other("ZooKeeper is not running".into()))?;
        let pid = i32::try_from(pid).map_err(|e| other(e.to_string()))?;
        kill(Pid::from_raw(pid), signal).map_err(std::io::Error::from)
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Asks `srvr`; `None` if nothing answers.
async fn srvr(port: u16) -> Option<String> {
    let ask = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(b"srvr").await.ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.ok()?;
        Some(answer)
    };
    tokio::time::timeout(Duration::from_secs(2), ask)
        .await
        .ok()
        .flatten()
}

fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A TCP proxy in front of a server that can cut its clients off, as a
/// network partition would: [`ZkProxy::cut`] drops every connection and
/// holds new ones silent until [`ZkProxy::restore`]. Stops when dropped.
pub struct ZkProxy {
    addr: SocketAddr,
    cut: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ZkProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkProxy")
            .field("addr", &self.addr)
            .field("cut", &*self.cut.borrow())
            .finish()
    }
}

impl ZkProxy {
    /// Listens on a free 127.0.0.1 port and forwards to `target` (`host:port`).
    pub async fn start(target: &str) -> std::io::Result<ZkProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(watch::channel(false).0);
        let task = tokio::spawn(forward(listener, target.to_owned(), cut.clone()));
        Ok(ZkProxy { addr, cut, task })
    }

    /// `127.0.0.1:port` of the proxy, for the clients to cut off.
    pub fn connect_string(&self) -> String {
        self.addr.to_string()
    }

    /// `zk://127.0.0.1:port{path}` through the proxy.
    pub fn url(&self, path: &str) -> String {
        format!("zk://{}{path}", self.addr)
    }

    /// Drops every proxied connection; new ones are accepted but get no answer.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for ZkProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut.send_replace(true);
    }
}

async fn forward(listener: TcpListener, target: String, cut: Arc<watch::Sender<bool>>) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        let mut cut_rx = cut.subscribe();
        let target = target.clone();
        tokio::spawn(async move {
            if *cut_rx.borrow_and_update() {
                // Black hole: hold the socket, answer nothing, until restored.
                let _ = cut_rx.wait_for(|c| !*c).await;
                return;
            }
            let Ok(mut outbound) = TcpStream::connect(&target).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = cut_rx.wait_for(|c| *c) => {}
            }
        });
    }
}

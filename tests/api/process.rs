//! The real binary (`authgate serve`) as an operator runs it: SIGTERM lets in-flight streams
//! finish (until `AUTHGATE_SHUTDOWN_TIMEOUT`) and exits 0; SIGKILL mid-flow loses nothing that
//! was committed; a PostgreSQL restart under load gives fast 503s, no crash, and recovery.
//!
//! Every process started here is killed on drop; a failing test prints the binary's log tail.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::post;
use futures::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::browser::Browser;
use crate::flow::{self, RegisteredClient, new_pkce};
use crate::helpers::Server;
use crate::ops::{INIT, Remote, free_port};

const LOG_LINES: usize = 400;
const PROBLEM_LINES: usize = 200;

/// The binary's output: the last lines, and every warning, error and stderr line (the first ones).
#[derive(Default)]
struct Log {
    tail: VecDeque<String>,
    problems: Vec<String>,
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("authgate-{what}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `authgate serve`, its output kept for diagnostics.
struct Authgate {
    child: tokio::process::Child,
    port: u16,
    base: String,
    log: Arc<Mutex<Log>>,
    name: &'static str,
}

fn keep_lines<R>(reader: R, log: Arc<Mutex<Log>>, prefix: &'static str)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut log = log.lock().unwrap();
            let line = format!("{prefix}{line}");
            if (line.contains(" WARN ") || line.contains(" ERROR ") || !prefix.is_empty())
                && log.problems.len() < PROBLEM_LINES
            {
                log.problems.push(line.clone());
            }
            if log.tail.len() >= LOG_LINES {
                log.tail.pop_front();
            }
            log.tail.push_back(line);
        }
    });
}

impl Authgate {
    /// Starts the binary on `port` with only the given variables (nothing inherited but PATH),
    /// and waits until `/healthz` answers.
    async fn start(name: &'static str, port: u16, env: &[(&str, String)]) -> Self {
        Self::start_with_args(name, port, env, &[]).await
    }

    /// `start`, with arguments after `serve` (such as `--config FILE`).
    async fn start_with_args(
        name: &'static str,
        port: u16,
        env: &[(&str, String)],
        args: &[&str],
    ) -> Self {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_authgate"));
        cmd.arg("serve")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AUTHGATE_LISTEN", format!("127.0.0.1:{port}"))
            .env("AUTHGATE_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("the authgate binary starts");
        let log = Arc::new(Mutex::new(Log::default()));
        keep_lines(child.stdout.take().unwrap(), log.clone(), "");
        keep_lines(child.stderr.take().unwrap(), log.clone(), "stderr: ");
        let mut me = Self {
            child,
            port,
            base: format!("http://127.0.0.1:{port}"),
            log,
            name,
        };
        me.wait_ready().await;
        me
    }

    async fn wait_ready(&mut self) {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{}/healthz", self.base)).send().await
                && r.status() == 200
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited during start-up ({status}):\n{}",
                    self.name,
                    self.tail(60)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer /healthz within 60 s:\n{}",
                self.name,
                self.tail(60)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    async fn signal(&self, sig: &str) {
        let status = tokio::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .await
            .unwrap();
        assert!(status.success(), "kill -{sig} failed");
    }

    async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .ok()
            .map(Result::unwrap)
    }

    fn still_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn log_text(&self) -> String {
        let log = self.log.lock().unwrap();
        log.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// The warnings and errors, then the last `n` lines.
    fn tail(&self, n: usize) -> String {
        let log = self.log.lock().unwrap();
        let skip = log.tail.len().saturating_sub(n);
        format!(
            "[warnings, errors and stderr]\n{}\n[last {n} lines]\n{}",
            log.problems.join("\n"),
            log.tail
                .iter()
                .skip(skip)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    fn remote(&self) -> Remote {
        Remote::new(self.base.clone(), self.base.clone())
    }
}

impl Drop for Authgate {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- last lines of {} (pid {:?}, port {}) ----\n{}\n----",
                self.name,
                self.child.id(),
                self.port,
                self.tail(30)
            );
        }
    }
}

fn sqlite_env(dir: &TempDir) -> (&'static str, String) {
    (
        "DATABASE_URL",
        format!("sqlite://{}", dir.path().join("authgate.db").display()),
    )
}

// ---- an upstream MCP server that streams ----

/// `{"method":"stream"}`: 5 SSE events 500 ms apart (about 2 s); `{"method":"long"}`: 60 events
/// 500 ms apart (30 s); anything else: a JSON result.
async fn upstream_mcp(body: String) -> axum::response::Response {
    let count = if body.contains("\"long\"") {
        60
    } else if body.contains("\"stream\"") {
        5
    } else {
        return (
            [("content-type", "application/json")],
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
        )
            .into_response();
    };
    let stream = futures::stream::iter(0..count).then(move |i| async move {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let last = i == count - 1;
        Ok::<_, std::io::Error>(format!(
            "event: message\ndata: {{\"n\":{i},\"last\":{last}}}\n\n"
        ))
    });
    (
        [("content-type", "text/event-stream")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

async fn spawn_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let router = Router::new().route("/mcp", post(upstream_mcp));
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

async fn start_stream(remote: &Remote, token: &str, method: &str) -> reqwest::Response {
    start_stream_with(
        remote,
        token,
        format!(r#"{{"jsonrpc":"2.0","id":7,"method":"{method}"}}"#),
    )
    .await
}

/// `start_stream` with a whole JSON-RPC body.
async fn start_stream_with(remote: &Remote, token: &str, body: String) -> reqwest::Response {
    // Its own client: the stream must not share a connection with anything else.
    let http = reqwest::Client::new();
    let resp = http
        .post(remote.url("/mcp"))
        .bearer_auth(token)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2025-06-18")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    resp
}

/// Whether a fresh TCP connection to `port` is refused.
async fn refuses_connections(port: u16) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(("127.0.0.1", port))
        )
        .await,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

async fn access_token(remote: &Remote) -> String {
    let client = flow::register_claude(&remote).await;
    let grant = flow::full_grant(&remote, &client).await;
    grant["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_refuses_new_connections_lets_streams_finish_and_exits_0() {
    let dir = TempDir::new("sigterm");
    let upstream = spawn_upstream().await;
    let port = free_port();
    let mut ag = Authgate::start(
        "authgate",
        port,
        &[sqlite_env(&dir), ("AUTHGATE_MCP_UPSTREAM", upstream)],
    )
    .await;
    let remote = ag.remote();
    let token = access_token(&remote).await;

    let started = Instant::now();
    let resp = start_stream(&remote, &token, "stream").await;
    let mut stream = resp.bytes_stream();
    let mut text = String::from_utf8(stream.next().await.unwrap().unwrap().to_vec()).unwrap();
    assert!(text.contains("\"n\":0"), "{text}");

    ag.signal("TERM").await;
    let term_at = Instant::now();
    let reader = tokio::spawn(async move {
        let mut rest = String::new();
        let mut error = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => rest.push_str(std::str::from_utf8(&b).unwrap()),
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            }
        }
        (rest, error, started.elapsed())
    });

    let mut refused_after = None;
    while term_at.elapsed() < Duration::from_secs(2) {
        if refuses_connections(port).await {
            refused_after = Some(term_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let refused_after = refused_after.unwrap_or_else(|| {
        panic!(
            "new connections were still accepted 2 s after SIGTERM:\n{}",
            ag.tail(40)
        )
    });
    let fresh = reqwest::Client::new()
        .get(format!("{}/healthz", remote.base))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(
        fresh.is_err(),
        "a new request after SIGTERM was answered: {:?}",
        fresh.map(|r| r.status())
    );

    let (rest, error, stream_took) = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the stream ends within 10 s")
        .unwrap();
    text.push_str(&rest);
    assert_eq!(error, None, "the in-flight stream broke: {text}");
    for n in 0..5 {
        assert!(
            text.contains(&format!("\"n\":{n}")),
            "event {n} missing after SIGTERM: {text}"
        );
    }
    assert!(text.contains("\"last\":true"), "{text}");

    let status = ag
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("still running 10 s after SIGTERM:\n{}", ag.tail(40)));
    let exited_after = term_at.elapsed();
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(
        ag.log_text().contains("shutting down"),
        "the shutdown is logged"
    );
    eprintln!(
        "sigterm: new connections refused {refused_after:?} after SIGTERM; the 2 s stream completed after {stream_took:?}; exit 0 {exited_after:?} after SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_cuts_streams_at_the_shutdown_timeout_and_exits_0() {
    let dir = TempDir::new("sigterm-deadline");
    let upstream = spawn_upstream().await;
    let port = free_port();
    let mut ag = Authgate::start(
        "authgate",
        port,
        &[
            sqlite_env(&dir),
            ("AUTHGATE_MCP_UPSTREAM", upstream),
            ("AUTHGATE_SHUTDOWN_TIMEOUT", "1s".to_owned()),
        ],
    )
    .await;
    let remote = ag.remote();
    let token = access_token(&remote).await;
    let resp = start_stream(&remote, &token, "long").await;
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(std::str::from_utf8(&first).unwrap().contains("\"n\":0"));

    ag.signal("TERM").await;
    let term_at = Instant::now();
    let status = ag
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("still running 10 s after SIGTERM:\n{}", ag.tail(40)));
    let exited_after = term_at.elapsed();
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(
        exited_after <= Duration::from_secs(3),
        "exit took {exited_after:?} with AUTHGATE_SHUTDOWN_TIMEOUT=1s"
    );
    // The client sees its stream end (cut), long before the upstream's 30 s.
    let mut events = 1;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => events += std::str::from_utf8(&b).unwrap().matches("\"n\":").count(),
                Err(_) => break,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the client's stream stayed open after exit");
    assert!(events < 60, "the 30 s stream cannot have completed");
    assert!(
        ag.log_text().contains("shutdown deadline reached"),
        "the cut is logged"
    );
    eprintln!(
        "sigterm with a 1 s deadline: exit 0 {exited_after:?} after SIGTERM; the client got {events} of 60 events"
    );
}

/// The audit writer waits a moment for fuller batches, so the row of a tool call that ends while
/// the server drains is still in memory when the last connection closes: shutdown must write it
/// before the process exits, or the trail misses the calls made during every deploy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_writes_the_audit_rows_of_calls_that_end_while_draining() {
    let dir = TempDir::new("sigterm-audit");
    // A rule that matches every tool and restricts nothing: it turns the audit of calls on.
    let config = dir.path().join("authgate.toml");
    std::fs::write(&config, "[[tool]]\nname = \"*\"\n").unwrap();
    let config = config.display().to_string();
    let upstream = spawn_upstream().await;
    let port = free_port();
    let env = [sqlite_env(&dir), ("AUTHGATE_MCP_UPSTREAM", upstream)];
    let mut ag =
        Authgate::start_with_args("authgate", port, &env, &["--config", config.as_str()]).await;
    let remote = ag.remote();
    let token = access_token(&remote).await;

    // The upstream answers a call whose body names "stream" with 5 events over about 2 s.
    let resp = start_stream_with(
        &remote,
        &token,
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"stream","arguments":{}}}"#
            .to_owned(),
    )
    .await;
    let mut stream = resp.bytes_stream();
    let mut text = String::from_utf8(stream.next().await.unwrap().unwrap().to_vec()).unwrap();
    ag.signal("TERM").await;
    while let Some(chunk) = stream.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(
        text.contains("\"last\":true"),
        "the call ran to its end: {text}"
    );
    let status = ag
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("still running 10 s after SIGTERM:\n{}", ag.tail(40)));
    assert_eq!(status.code(), Some(0), "exit status {status}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["audit", "--json"])
        .env_clear()
        .env("DATABASE_URL", &env[0].1)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let calls: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "tool_call").collect();
    assert_eq!(
        calls.len(),
        1,
        "the call that ended after SIGTERM is in the trail: {rows:#?}\n{}",
        ag.tail(20)
    );
    assert_eq!(calls[0]["tool"], "stream");
    assert_eq!(calls[0]["outcome"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_flow_loses_nothing_committed() {
    let dir = TempDir::new("sigkill");
    let port = free_port();
    let env = [sqlite_env(&dir)];
    let mut ag = Authgate::start("authgate (before SIGKILL)", port, &env).await;
    let remote = ag.remote();
    let client = flow::register_claude(&remote).await;
    let grant = flow::full_grant(&remote, &client).await;
    let old_at = grant["access_token"].as_str().unwrap().to_owned();
    let rotated = flow::refresh(&remote, &client, grant["refresh_token"].as_str().unwrap()).await;
    assert_eq!(rotated.status(), 200);
    let rotated: Value = rotated.json().await.unwrap();
    let rt = rotated["refresh_token"].as_str().unwrap().to_owned();

    let browser = Browser::new();
    let pkce = new_pkce();
    let pending = flow::consent_for(&remote, &browser, &client, &pkce).await;

    ag.signal("KILL").await;
    let status = ag
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("SIGKILL ends the process");
    assert!(!status.success(), "{status}");
    drop(ag);

    let ag = Authgate::start("authgate (after SIGKILL)", port, &env).await;
    let remote = ag.remote();
    assert_eq!(
        flow::mcp_post(&remote, Some(&old_at), INIT).await.status(),
        200,
        "the signing key survived: an access token from before is still accepted"
    );
    let code = flow::approve_and_login(&remote, &browser, &client, &pending).await;
    let redeemed = flow::redeem(&remote, &client, &code, &pkce).await;
    assert_eq!(
        redeemed.status(),
        200,
        "the consent pending at the kill completes"
    );
    let refreshed = flow::refresh(&remote, &client, &rt).await;
    assert_eq!(
        refreshed.status(),
        200,
        "the refresh token issued before the kill still works"
    );
    let again = flow::full_grant(&remote, &client).await;
    assert!(again["access_token"].is_string(), "the client still works");
}

// ---- PostgreSQL restarted under load ----

/// A private PostgreSQL cluster in a temporary directory, stopped and removed on drop.
struct PgCluster {
    bin: PathBuf,
    dir: TempDir,
    port: u16,
    as_root: bool,
}

fn pg_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries in /usr/lib/postgresql (Debian's postgresql package)")
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
        .collect();
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
        .expect("initdb and pg_ctl in /usr/lib/postgresql/*/bin")
}

impl PgCluster {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The command, run as the postgres user when this process is root (initdb refuses root).
    fn command(as_root: bool, program: PathBuf) -> std::process::Command {
        if as_root {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            std::process::Command::new(program)
        }
    }

    fn pg_ctl(&self) -> std::process::Command {
        let mut c = Self::command(self.as_root, self.bin.join("pg_ctl"));
        c.arg("-D").arg(self.data());
        c
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_file()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// initdb and start (blocking: before any load).
    fn create() -> Self {
        let as_root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let dir = TempDir::new("pg");
        if as_root {
            let ok = std::process::Command::new("chown")
                .arg("postgres")
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success(), "chown postgres {}", dir.path().display());
        }
        let cluster = Self {
            bin: pg_bin(),
            dir,
            port: free_port(),
            as_root,
        };
        let out = Self::command(as_root, cluster.bin.join("initdb"))
            .arg("-D")
            .arg(cluster.data())
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let out = cluster.start_command().output().unwrap();
        assert!(
            out.status.success(),
            "PostgreSQL did not start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            cluster.log_tail()
        );
        cluster
    }

    fn start_command(&self) -> std::process::Command {
        let mut c = self.pg_ctl();
        c.arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "30", "start", "-o"])
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1",
                self.port,
                self.dir.path().display()
            ));
        c
    }

    async fn run(&self, what: &str, cmd: std::process::Command) {
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("pg_ctl {what} took over 60 s"))
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {what} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
    }

    async fn stop_fast(&self) {
        let mut c = self.pg_ctl();
        c.args(["-m", "fast", "-w", "-t", "30", "stop"]);
        self.run("stop -m fast", c).await;
    }

    async fn start(&self) {
        self.run("start", self.start_command()).await;
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- PostgreSQL log ----\n{}\n----", self.log_tail());
        }
        let _ = self
            .pg_ctl()
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Register,
    Refresh,
    Metadata,
}

#[derive(Debug, Clone)]
struct Sample {
    #[allow(dead_code)] // read in failure reports (Debug)
    task: usize,
    kind: Kind,
    /// Seconds since the load began.
    start: f64,
    end: f64,
    /// The status, or the transport error.
    outcome: Result<u16, String>,
}

impl Sample {
    fn took(&self) -> f64 {
        self.end - self.start
    }

    fn ok(&self) -> bool {
        matches!(self.outcome, Ok(200 | 201))
    }
}

/// An open-loop load: requests are launched at a fixed rate whatever the answers, as clients
/// would, so an outage is met by many requests rather than by one per waiting task.
struct Load {
    remote: Arc<Remote>,
    http: reqwest::Client,
    t0: Instant,
    /// Grants refreshed in turn, each with its latest refresh token.
    grants: Vec<(RegisteredClient, Mutex<String>)>,
    samples: Mutex<Vec<Sample>>,
    registered: Mutex<Vec<String>>,
}

impl Load {
    fn secs(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    async fn one(self: Arc<Self>, i: usize) {
        let kind = [Kind::Register, Kind::Refresh, Kind::Metadata][i % 3];
        let start = self.secs();
        let outcome = match kind {
            Kind::Register => {
                match self
                    .http
                    .post(self.remote.url("/register"))
                    .header("Content-Type", "application/json")
                    .body(crate::helpers::CLAUDE_DCR_BODY)
                    .send()
                    .await
                {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        if status == 201 {
                            let body: Value = r.json().await.unwrap();
                            self.registered
                                .lock()
                                .unwrap()
                                .push(body["client_id"].as_str().unwrap().to_owned());
                        }
                        Ok(status)
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Kind::Refresh => {
                let (client, latest) = &self.grants[(i / 3) % self.grants.len()];
                let token = latest.lock().unwrap().clone();
                let form = [
                    ("grant_type", "refresh_token"),
                    ("refresh_token", token.as_str()),
                    ("client_id", client.id.as_str()),
                    ("client_secret", client.secret.as_deref().unwrap()),
                ];
                match self
                    .http
                    .post(self.remote.url("/token"))
                    .form(&form)
                    .send()
                    .await
                {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        if status == 200 {
                            let body: Value = r.json().await.unwrap();
                            *latest.lock().unwrap() =
                                body["refresh_token"].as_str().unwrap().to_owned();
                        }
                        Ok(status)
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Kind::Metadata => {
                match self
                    .http
                    .get(self.remote.url("/.well-known/oauth-authorization-server"))
                    .send()
                    .await
                {
                    Ok(r) => Ok(r.status().as_u16()),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        let end = self.secs();
        self.samples.lock().unwrap().push(Sample {
            task: i,
            kind,
            start,
            end,
            outcome,
        });
    }
}

fn summarize(samples: &[Sample], from: f64, to: f64) -> String {
    let mut counts: std::collections::BTreeMap<(Kind, String), usize> = Default::default();
    for s in samples.iter().filter(|s| s.start >= from && s.start < to) {
        let o = match &s.outcome {
            Ok(code) => code.to_string(),
            Err(e) => format!("error {e}"),
        };
        *counts.entry((s.kind, o)).or_default() += 1;
    }
    counts
        .iter()
        .map(|((k, o), n)| format!("{k:?} {o}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How long PostgreSQL stays down: a little longer than authgate's pool acquire timeout (3 s), so
/// that some requests start and fail entirely inside the outage.
const OUTAGE: Duration = Duration::from_secs(4);
/// One request every this long (register, refresh, metadata in turn).
const LOAD_INTERVAL: Duration = Duration::from_millis(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_under_load_gives_fast_503s_and_recovers_without_loss() {
    const GRANTS: usize = 6;
    let pg = PgCluster::create();
    let port = free_port();
    let mut ag = Authgate::start(
        "authgate (PostgreSQL)",
        port,
        &[
            ("DATABASE_URL", pg.url()),
            ("AUTHGATE_REGISTER_RATE_LIMIT", "100000/min".to_owned()),
        ],
    )
    .await;
    let remote = Arc::new(ag.remote());
    let mut grants = Vec::new();
    for _ in 0..GRANTS {
        let client = flow::register_claude(&remote).await;
        let grant = flow::full_grant(&remote, &client).await;
        let rt = grant["refresh_token"].as_str().unwrap().to_owned();
        grants.push((client, Mutex::new(rt)));
    }

    let load = Arc::new(Load {
        remote: remote.clone(),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        t0: Instant::now(),
        grants,
        samples: Mutex::new(Vec::new()),
        registered: Mutex::new(Vec::new()),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let generator = {
        let (load, stop) = (load.clone(), stop.clone());
        tokio::spawn(async move {
            let mut requests = Vec::new();
            let mut tick = tokio::time::interval(LOAD_INTERVAL);
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                tick.tick().await;
                requests.push(tokio::spawn(load.clone().one(i)));
                i += 1;
            }
            for r in requests {
                r.await.unwrap();
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Queries in flight when PostgreSQL goes away: a lock makes every statement on `clients`
    // wait, so the registrations and refreshes of the next half second are mid-query at the stop.
    let mut locker = {
        use sqlx::Connection as _;
        sqlx::PgConnection::connect(&pg.url()).await.unwrap()
    };
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE clients IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    let lock_at = load.secs();
    let in_flight = {
        let remote = remote.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = remote
                .http
                .post(remote.url("/register"))
                .header("Content-Type", "application/json")
                .body(crate::helpers::CLAUDE_DCR_BODY)
                .send()
                .await;
            let status = match r {
                Ok(r) => Ok((r.status().as_u16(), r.text().await.unwrap_or_default())),
                Err(e) => Err(e.to_string()),
            };
            (status, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !in_flight.is_finished(),
        "the registration waits on the lock"
    );

    let stop_begin = load.secs();
    pg.stop_fast().await;
    drop(locker);
    let down_at = load.secs();
    // While it is down: readiness says so.
    let ready_start = Instant::now();
    let ready = match remote.http.get(remote.url("/readyz")).send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    };
    let ready_took = ready_start.elapsed();
    let left = OUTAGE.as_secs_f64() - (load.secs() - down_at);
    if left > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(left)).await;
    }
    let start_begin = load.secs();
    pg.start().await;
    let up_at = load.secs();
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(30), generator)
        .await
        .expect("every request of the load ends (none hangs)")
        .unwrap();
    let end = load.secs();
    let running = ag.still_running();
    let in_flight = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the registration in flight at the stop ends")
        .unwrap();
    let mut samples = load.samples.lock().unwrap().clone();
    samples.sort_by(|a, b| a.start.total_cmp(&b.start));
    let registered = load.registered.lock().unwrap().clone();

    // Measurements, printed whatever happens next.
    let needs_db = |s: &&Sample| s.kind != Kind::Metadata;
    let failed_db: Vec<&Sample> = samples
        .iter()
        .filter(needs_db)
        .filter(|s| !s.ok())
        .collect();
    let first_failure_start = failed_db.iter().map(|s| s.start).fold(f64::NAN, f64::min);
    let last_failure_end = failed_db.iter().map(|s| s.end).fold(f64::NAN, f64::max);
    let recovery = if last_failure_end.is_nan() {
        0.0
    } else {
        (last_failure_end - up_at).max(0.0)
    };
    let first_success_after_down = samples
        .iter()
        .filter(needs_db)
        .filter(|s| s.start >= down_at && s.ok())
        .map(|s| s.end)
        .fold(f64::NAN, f64::min);
    let mut unavailable: Vec<f64> = samples
        .iter()
        .filter(needs_db)
        .filter(|s| s.outcome == Ok(503))
        .map(Sample::took)
        .collect();
    unavailable.sort_by(f64::total_cmp);
    let slowest = samples
        .iter()
        .max_by(|a, b| a.took().total_cmp(&b.took()))
        .cloned();
    eprintln!(
        "postgres restart: stop issued at {stop_begin:.2}s, down at {down_at:.2}s, start issued at {start_begin:.2}s, up at {up_at:.2}s, load ended at {end:.2}s\n\
         failed DB requests: started from {first_failure_start:.2}s, last one ended at {last_failure_end:.2}s => error window {:.2}s; \
         first success after the stop ended at {first_success_after_down:.2}s ({:.2}s after PostgreSQL was up); recovery (last failure after up): {recovery:.2}s\n\
         503 answers: {} (fastest {:.2}s, median {:.2}s, slowest {:.2}s); slowest request overall: {slowest:?}\n\
         /readyz while down: {ready:?} in {ready_took:?}\n\
         registration in flight at the stop: {in_flight:?}\n\
         by start time: before: [{}]\n locked: [{}]\n during stop: [{}]\n down: [{}]\n during start: [{}]\n after: [{}]\n\
         registered (201): {}; authgate still running: {running}",
        last_failure_end - first_failure_start,
        first_success_after_down - up_at,
        unavailable.len(),
        unavailable.first().copied().unwrap_or(f64::NAN),
        unavailable
            .get(unavailable.len() / 2)
            .copied()
            .unwrap_or(f64::NAN),
        unavailable.last().copied().unwrap_or(f64::NAN),
        summarize(&samples, 0.0, lock_at),
        summarize(&samples, lock_at, stop_begin),
        summarize(&samples, stop_begin, down_at),
        summarize(&samples, down_at, start_begin),
        summarize(&samples, start_begin, up_at),
        summarize(&samples, up_at, f64::MAX),
        registered.len(),
    );

    // Every check runs and every failure is reported together, so that one run tells the whole
    // story of the outage.
    let mut failures: Vec<String> = Vec::new();
    macro_rules! check {
        ($cond:expr, $($fmt:tt)+) => {
            let ok: bool = $cond;
            if !ok {
                failures.push(format!($($fmt)+));
            }
        };
    }
    check!(running, "authgate exited during the outage");
    check!(
        matches!(&in_flight.0, Ok((503, _))),
        "a registration whose query was in flight when PostgreSQL stopped must get 503, got {in_flight:?}"
    );
    let bad: Vec<&Sample> = samples
        .iter()
        .filter(|s| !matches!(s.outcome, Ok(200 | 201 | 503)))
        .collect();
    check!(
        bad.is_empty(),
        "answers other than success or 503 (a 500 where 503 is right, or a dropped connection): {bad:#?}"
    );
    let slow: Vec<&Sample> = samples.iter().filter(|s| s.took() > 5.0).collect();
    check!(slow.is_empty(), "requests that hung over 5 s: {slow:#?}");
    let metadata_failures: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.kind == Kind::Metadata && s.outcome != Ok(200))
        .collect();
    check!(
        metadata_failures.is_empty(),
        "the metadata needs no database and must keep answering: {metadata_failures:#?}"
    );
    // Requests that needed the database and ran entirely while it was down.
    let down: Vec<&Sample> = samples
        .iter()
        .filter(needs_db)
        .filter(|s| s.start >= down_at && s.end <= start_begin)
        .collect();
    for kind in [Kind::Register, Kind::Refresh] {
        check!(
            down.iter().filter(|s| s.kind == kind).count() >= 2,
            "too few {kind:?} requests ran entirely while PostgreSQL was down: the test did not exercise the outage"
        );
    }
    let not_503: Vec<&&Sample> = down.iter().filter(|s| s.outcome != Ok(503)).collect();
    check!(
        not_503.is_empty(),
        "requests made while PostgreSQL was down must get 503: {not_503:#?}"
    );
    check!(
        ready.0 == 503 && ready.1.contains("\"database\":false"),
        "/readyz while PostgreSQL is down must be 503 naming the database: {ready:?}"
    );
    check!(
        recovery <= 5.0,
        "requests still failed {recovery:.2}s after PostgreSQL was back (last failure ended at {last_failure_end:.2}s, up at {up_at:.2}s)"
    );
    for kind in [Kind::Register, Kind::Refresh] {
        check!(
            samples
                .iter()
                .filter(|s| s.kind == kind && s.start > up_at + recovery)
                .count()
                >= 5,
            "too few {kind:?} requests after recovery to show it"
        );
    }
    let ready_after = remote.http.get(remote.url("/readyz")).send().await.unwrap();
    check!(
        ready_after.status() == 200,
        "/readyz after the outage: {}",
        ready_after.status()
    );

    // Nothing committed is lost: every client that got 201 is known, every grant refreshes.
    let pkce = new_pkce();
    let mut unknown = Vec::new();
    for id in &registered {
        let url = flow::authorize_url(
            &remote,
            id,
            "https://claude.ai/api/mcp/auth_callback",
            &pkce,
            &[],
        );
        let status = remote.http.get(&url).send().await.unwrap().status();
        if status != 200 {
            unknown.push((id.clone(), status.as_u16()));
        }
    }
    check!(
        unknown.is_empty(),
        "registered clients (201) that are now unknown: {unknown:?} of {}",
        registered.len()
    );
    check!(
        registered.len() >= 20,
        "only {} registrations succeeded",
        registered.len()
    );
    for (client, latest) in &load.grants {
        let rt = latest.lock().unwrap().clone();
        let resp = flow::refresh(&remote, client, &rt).await;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        check!(
            status == 200,
            "the latest refresh token of client {} after the outage: {status} {text}",
            client.id
        );
    }
    assert!(
        failures.is_empty(),
        "{} check(s) failed:\n- {}",
        failures.len(),
        failures.join("\n- ")
    );
    drop(ag);
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_request_ids_and_the_client_address_never_secrets() {
    let dir = TempDir::new("logs");
    let port = free_port();
    let env = [
        sqlite_env(&dir),
        ("AUTHGATE_LOG_FORMAT", "json".to_owned()),
        ("AUTHGATE_TRUSTED_PROXIES", "127.0.0.1/32".to_owned()),
    ];
    let ag = Authgate::start("authgate (json logs)", port, &env).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let reg: Value = http
        .post(format!("{}/register", ag.base))
        .header("X-Forwarded-For", "198.51.100.7")
        .json(&serde_json::json!({"redirect_uris":["https://claude.ai/api/mcp/auth_callback"],"token_endpoint_auth_method":"client_secret_post"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = reg["client_secret"].as_str().unwrap().to_owned();
    let resp = http
        .get(format!(
            "{}/oauth/callback?code=SECRET-CODE-123&state=SECRET-STATE-456",
            ag.base
        ))
        .send()
        .await
        .unwrap();
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = ag.tail(LOG_LINES);
    let entries: Vec<Value> = lines
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(!entries.is_empty(), "JSON log lines:\n{lines}");
    let registered = entries
        .iter()
        .find(|e| e["span"]["path"] == "/register")
        .unwrap_or_else(|| panic!("no /register line:\n{lines}"));
    assert_eq!(
        registered["span"]["client"], "198.51.100.7",
        "the forwarded address, from a trusted proxy"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["span"]["request_id"] == request_id.as_str()),
        "the response's request id is on its log lines"
    );
    for needle in [secret.as_str(), "SECRET-CODE-123", "SECRET-STATE-456"] {
        assert!(
            !lines.contains(needle),
            "{needle} leaked into the logs:\n{lines}"
        );
    }
}

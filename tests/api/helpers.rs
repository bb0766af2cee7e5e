use std::str::FromStr;
use std::sync::Arc;

use authgate::clock::MockClock;
use authgate::config::{RawConfig, Settings};
use authgate::random::SystemRandom;
use authgate::startup::Application;
use authgate::state::AppState;
use authgate::store::{DynStore, PgStore, SqliteStore};
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

/// Generates one `#[tokio::test]` per backend for each listed `async fn(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server the tests use. Unreachable is a failure, never a skip.
pub fn pg_admin_url() -> String {
    std::env::var("AUTHGATE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub const T0: i64 = 1_790_000_000;

/// A fresh, migrated store: a new SQLite file, or a new PostgreSQL schema.
pub async fn fresh_store(backend: Backend) -> DynStore {
    fresh_named_store(backend).await.0
}

/// The same, with its name, to open it again (another instance's pool, a restart).
pub async fn fresh_named_store(backend: Backend) -> (DynStore, String) {
    let name = format!("t{}", uuid::Uuid::new_v4().simple());
    (open_store(backend, &name).await, name)
}

/// Opens (creating on first use) the store called `name`: opening it again is a restart.
pub async fn open_store(backend: Backend, name: &str) -> DynStore {
    match backend {
        Backend::Sqlite => {
            let path = std::env::temp_dir().join(format!("authgate-{name}.db"));
            let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
                .unwrap()
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(std::time::Duration::from_secs(10));
            Arc::new(SqliteStore::connect_with(opts).await.unwrap())
        }
        Backend::Postgres => {
            let admin = pg_admin_url();
            let pool = sqlx::PgPool::connect(&admin).await.unwrap_or_else(|e| {
                panic!("PostgreSQL is required for the tests and is unreachable at AUTHGATE_TEST_DATABASE_URL ({e}); start it (see .ci/run)")
            });
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {name}"
            )))
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
            let opts = PgConnectOptions::from_str(&admin)
                .unwrap()
                .options([("search_path", name)]);
            Arc::new(PgStore::connect_with(opts).await.unwrap())
        }
    }
}

/// What the flow building blocks (`flow.rs`) talk to: the application in this process, or an
/// instance reached apart from its public URL (a process, another replica behind the same public
/// URL). One harness shape for every API test.
pub trait Server {
    /// Where requests are sent.
    fn base(&self) -> &str;
    /// The public URL authgate advertises: the same as `base` unless a load balancer sits in
    /// between.
    fn public(&self) -> &str {
        self.base()
    }
    fn client(&self) -> &reqwest::Client;
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }
    /// A URL authgate advertised on its public URL, sent to this instance instead (what the
    /// load balancer would do).
    fn local(&self, url: &str) -> String {
        let rest = url
            .strip_prefix(self.public())
            .unwrap_or_else(|| panic!("{url} is not under the public URL {}", self.public()));
        format!("{}{rest}", self.base())
    }
}

impl<T: Server> Server for &T {
    fn base(&self) -> &str {
        (**self).base()
    }

    fn public(&self) -> &str {
        (**self).public()
    }

    fn client(&self) -> &reqwest::Client {
        (**self).client()
    }
}

impl<T: Server> Server for std::sync::Arc<T> {
    fn base(&self) -> &str {
        (**self).base()
    }

    fn public(&self) -> &str {
        (**self).public()
    }

    fn client(&self) -> &reqwest::Client {
        (**self).client()
    }
}

impl Server for TestApp {
    fn base(&self) -> &str {
        &self.base
    }

    fn client(&self) -> &reqwest::Client {
        &self.http
    }
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub state: AppState,
    pub clock: MockClock,
    pub store: DynStore,
    backend: Backend,
    store_name: String,
    settings: Settings,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        Server::url(self, path)
    }

    /// Stops the server and starts a new one on the same address, settings and database (reopened),
    /// as a process restart would.
    pub async fn restart(self) -> TestApp {
        self.restart_with(|_| {}).await
    }

    /// [`Self::restart`] with changed settings, as an operator restarts with a new configuration.
    pub async fn restart_with(mut self, tweak: impl FnOnce(&mut Settings)) -> TestApp {
        tweak(&mut self.settings);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.server.take() {
            let _ = task.await;
        }
        let addr = self.settings.listen;
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let store = open_store(self.backend, &self.store_name).await;
        start(
            self.backend,
            self.store_name.clone(),
            self.settings.clone(),
            listener,
            store,
            self.clock.clone(),
        )
        .await
    }

    /// A second instance on the same database, public URL and clock, on its own port and
    /// connection pool (as another replica behind the load balancer). `tweak` may adjust its
    /// settings.
    pub async fn another_instance(&self, tweak: impl FnOnce(&mut Settings)) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut settings = self.settings.clone();
        settings.listen = listener.local_addr().unwrap();
        tweak(&mut settings);
        let store = open_store(self.backend, &self.store_name).await;
        start(
            self.backend,
            self.store_name.clone(),
            settings,
            listener,
            store,
            self.clock.clone(),
        )
        .await
    }

    /// The database URL of this app's store, for the CLI.
    pub fn database_url(&self) -> String {
        match self.backend {
            Backend::Sqlite => format!(
                "sqlite://{}",
                std::env::temp_dir()
                    .join(format!("authgate-{}.db", self.store_name))
                    .display()
            ),
            Backend::Postgres => {
                let admin = pg_admin_url();
                let sep = if admin.contains('?') { '&' } else { '?' };
                format!("{admin}{sep}options=-csearch_path%3D{}", self.store_name)
            }
        }
    }

    /// `SELECT COUNT(*) ...` straight on the database, on a connection of its own.
    pub async fn count_rows(&self, query: &str) -> i64 {
        let query = sqlx::AssertSqlSafe(query.to_owned());
        match self.backend {
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.database_url())
                    .await
                    .unwrap();
                let (n,): (i64,) = sqlx::query_as(query).fetch_one(&pool).await.unwrap();
                pool.close().await;
                n
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.database_url()).await.unwrap();
                let (n,): (i64,) = sqlx::query_as(query).fetch_one(&pool).await.unwrap();
                pool.close().await;
                n
            }
        }
    }

    pub fn clock_now(&self) -> i64 {
        use authgate::clock::Clock;
        self.clock.now()
    }

    pub async fn register(&self, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url("/register"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Boots the real application on a random loopback port. `configure` may set any variable.
pub async fn spawn_app_with(backend: Backend, configure: impl FnOnce(&mut RawConfig)) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    spawn_app_on(backend, listener, configure).await
}

/// Boots the application on a store wrapped by `wrap` (fault injection); `TestApp::store` stays
/// the plain store, for checking what was persisted.
pub async fn spawn_app_wrapped(
    backend: Backend,
    wrap: impl FnOnce(DynStore) -> DynStore,
) -> TestApp {
    spawn_app_wrapped_with(backend, wrap, |_| {}).await
}

/// [`spawn_app_wrapped`], with `configure` setting more.
pub async fn spawn_app_wrapped_with(
    backend: Backend,
    wrap: impl FnOnce(DynStore) -> DynStore,
    configure: impl FnOnce(&mut RawConfig),
) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut raw = RawConfig::default();
    raw.set("AUTHGATE_LISTEN", addr.to_string());
    raw.set("AUTHGATE_PUBLIC_URL", format!("http://{addr}"));
    configure(&mut raw);
    let settings = Settings::from_raw(&raw).unwrap();
    let store_name = format!("t{}", uuid::Uuid::new_v4().simple());
    let store = open_store(backend, &store_name).await;
    let served = wrap(store.clone());
    start_serving(
        backend,
        store_name,
        settings,
        listener,
        (store, served),
        MockClock::new(T0),
    )
    .await
}

/// The same, on a listener bound beforehand (when a third party must know the port first).
pub async fn spawn_app_on(
    backend: Backend,
    listener: tokio::net::TcpListener,
    configure: impl FnOnce(&mut RawConfig),
) -> TestApp {
    let addr = listener.local_addr().unwrap();
    let mut raw = RawConfig::default();
    raw.set("AUTHGATE_LISTEN", addr.to_string());
    raw.set("AUTHGATE_PUBLIC_URL", format!("http://{addr}"));
    configure(&mut raw);
    let settings = Settings::from_raw(&raw).unwrap();
    let store_name = format!("t{}", uuid::Uuid::new_v4().simple());
    let store = open_store(backend, &store_name).await;
    start(
        backend,
        store_name,
        settings,
        listener,
        store,
        MockClock::new(T0),
    )
    .await
}

async fn start(
    backend: Backend,
    store_name: String,
    settings: Settings,
    listener: tokio::net::TcpListener,
    store: DynStore,
    clock: MockClock,
) -> TestApp {
    let served = store.clone();
    start_serving(
        backend,
        store_name,
        settings,
        listener,
        (store, served),
        clock,
    )
    .await
}

/// `stores`: the plain store (for the test's checks) and the one the application uses.
async fn start_serving(
    backend: Backend,
    store_name: String,
    settings: Settings,
    listener: tokio::net::TcpListener,
    (store, served): (DynStore, DynStore),
    clock: MockClock,
) -> TestApp {
    let base = format!("http://{}", settings.listen);
    let app = Application::build(
        settings.clone(),
        listener,
        served,
        Arc::new(clock.clone()),
        Arc::new(SystemRandom),
    )
    .await
    .unwrap();
    let state = app.state();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    TestApp {
        base,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        state,
        clock,
        store,
        backend,
        store_name,
        settings,
        shutdown: Some(tx),
        server: Some(server),
    }
}

pub const CLAUDE_DCR_BODY: &str = r#"{"redirect_uris":["https://claude.ai/api/mcp/auth_callback"],"token_endpoint_auth_method":"client_secret_post","grant_types":["authorization_code","refresh_token"],"response_types":["code"],"client_name":"Claude"}"#;

pub const INSPECTOR_DCR_BODY: &str = r#"{"redirect_uris":["http://localhost:6274/oauth/callback","http://localhost:6274/oauth/callback/debug"],"token_endpoint_auth_method":"none","grant_types":["authorization_code","refresh_token"],"response_types":["code"],"client_name":"MCP Inspector","client_uri":"https://github.com/modelcontextprotocol/inspector","scope":""}"#;

pub const MCP_REMOTE_DCR_BODY: &str = r#"{"redirect_uris":["http://localhost:3334/oauth/callback"],"token_endpoint_auth_method":"none","grant_types":["authorization_code","refresh_token"],"response_types":["code"],"client_name":"MCP CLI Client","client_uri":"https://github.com/modelcontextprotocol/mcp-cli","software_id":"2e6dc280-f3c3-4e01-99a7-8181dbd1d23d","software_version":"0.1.38","scope":"mcp"}"#;

/// An upstream provider that is never contacted (discovery is lazy): for tests of a
/// non-loopback public URL, which requires one.
pub fn stub_upstream(raw: &mut RawConfig) {
    raw.set("AUTHGATE_UPSTREAM_ISSUER", "https://login.example.invalid/");
    raw.set("AUTHGATE_UPSTREAM_CLIENT_ID", "authgate");
    raw.set("AUTHGATE_UPSTREAM_CLIENT_SECRET", "upstream-secret");
    raw.set("AUTHGATE_ALLOW_ANY_USER", "true");
}

/// Notes that a compatibility case passed, for the README's table (`scripts/compat-table`).
/// Called as the last line of a passing case, so a failing case leaves no record.
pub fn record_compat(client: &str, registration: &str, backend: Backend) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/compat");
    std::fs::create_dir_all(&dir).unwrap();
    let backend = match backend {
        Backend::Sqlite => "SQLite",
        Backend::Postgres => "PostgreSQL",
    };
    let name: String = format!("{client}-{registration}-{backend}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let record =
        serde_json::json!({"client": client, "registration": registration, "backend": backend});
    std::fs::write(dir.join(format!("{name}.json")), record.to_string()).unwrap();
}

/// How long a helper process (the IdP, an MCP server) may take to print its READY line. Only a
/// hang should reach it: with the suite's other tests loading both cores, node's start-up (module
/// loading, the IdP's RSA key) once took more than 20 s.
pub const CHILD_START: std::time::Duration = std::time::Duration::from_secs(120);

/// Reads `child`'s first stdout line, which must be `<prefix><rest>`; returns `rest`, trimmed.
/// A timeout names the machine's load so a slow machine is told apart from a hung child.
pub async fn ready_line(child: &mut tokio::process::Child, prefix: &str, what: &str) -> String {
    use tokio::io::AsyncBufReadExt as _;
    let stdout = child.stdout.take().expect("the child's stdout is piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let started = std::time::Instant::now();
    let line = match tokio::time::timeout(CHILD_START, lines.next_line()).await {
        Ok(line) => line
            .expect("reading the child's stdout")
            .unwrap_or_else(|| panic!("{what} exited before it was ready")),
        Err(_) => {
            let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
            panic!(
                "{what} did not start within {:?} (load average: {})",
                started.elapsed(),
                load.trim()
            )
        }
    };
    line.strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{what} printed {line:?}, not its READY line"))
        .trim()
        .to_owned()
}

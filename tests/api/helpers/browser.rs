//! A real headless Chromium, driven through Debian's chromedriver (WebDriver) with fantoccini,
//! and a console served in this process on 127.0.0.1 with its own users file.
//!
//! Each browser runs its own chromedriver on a free loopback port, with a fresh profile and the
//! flags that keep Chromium off the network (no background fetches, no component updates); it is
//! closed, and its chromedriver killed by its pid, when the test ends. A failing test leaves a
//! screenshot of the page it was on under `target/console-screenshots/`.

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use fantoccini::{elements::Element, Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use moka_ingest::config::Settings;
use tokio::{net::TcpListener, process::Child};
use tokio_util::sync::CancellationToken;

use super::process::free_port;

pub const OPERATOR: (&str, &str) = ("olga", "operator-password-1");
pub const VIEWER: (&str, &str) = ("victor", "viewer-password-1");

/// A users file with one operator and one viewer, in a directory of its own.
pub fn users_file(dir: &Path) -> PathBuf {
    let hash = |p: &str| moka_ingest::console::users::hash_password(p).unwrap();
    let path = dir.join("users");
    std::fs::write(
        &path,
        format!("{}:operator:{}\n{}:viewer:{}\n", OPERATOR.0, hash(OPERATOR.1), VIEWER.0, hash(VIEWER.1)),
    )
    .unwrap();
    path
}

/// A console serving in this process.
pub struct TestConsole {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl TestConsole {
    pub async fn spawn(settings: &Settings) -> TestConsole {
        moka_ingest::telemetry::metrics();
        let console = moka_ingest::console::Console::open(settings).await.expect("the console opens");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { moka_ingest::console::serve(console, listener, shutdown).await.expect("the console serves") }
        });
        TestConsole { addr, shutdown, task }
    }

    pub fn url(&self, path: &str) -> String {
        // The console listens on 127.0.0.1 (bound above); only its port varies.
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// Chromium under chromedriver.
pub struct Browser {
    pub client: Client,
    driver: std::sync::Mutex<Child>,
    /// The profile and the browser's TMPDIR, removed by `close`.
    own: PathBuf,
}

impl Browser {
    pub async fn start() -> Browser {
        let port = free_port();
        // One directory holds the profile and the browser's TMPDIR: Chromium leaves an empty
        // `org.chromium.Chromium.scoped_dir.*` in its TMPDIR now and then, and `close` removes
        // the whole directory.
        let own = std::env::temp_dir().join(format!("moka-console-chrome-{}", uuid::Uuid::now_v7().simple()));
        let (profile, tmp) = (own.join("profile"), own.join("tmp"));
        std::fs::create_dir_all(&tmp).expect("the browser's own TMPDIR");
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .env("TMPDIR", &tmp)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; .ci/run installs it)");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-default-apps",
                    "--window-size=1280,1000", format!("--user-data-dir={}", profile.display()),
                ]
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let url = format!("http://127.0.0.1:{port}");
        let mut last = None;
        for _ in 0..100 {
            match ClientBuilder::new(connector.clone()).capabilities(caps.clone()).connect(&url).await {
                Ok(client) => return Browser { client, driver: std::sync::Mutex::new(driver), own },
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start a session: {last:?}");
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("the page loads");
    }

    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css} on the page: {e}"))
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    pub async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.unwrap().len()
    }

    pub async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    /// The path once it is `expected` (a click's navigation may not have happened yet), or the
    /// last one seen after 5 s.
    pub async fn path_after_click(&self, expected: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let path = self.path().await;
            if path == expected || tokio::time::Instant::now() >= deadline {
                return path;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Logs in through the form.
    pub async fn login(&self, console: &TestConsole, (user, password): (&str, &str)) {
        self.goto(&console.url("/login")).await;
        self.find("input[name=username]").await.send_keys(user).await.unwrap();
        self.find("input[name=password]").await.send_keys(password).await.unwrap();
        self.find("form button[type=submit]").await.click().await.unwrap();
        // The next page: the console (logged in) or the form again with its error.
        self.find("#whoami, #login-error").await;
    }

    /// The session cookie, for requests made outside the browser.
    pub async fn session_cookie(&self) -> String {
        let c = self.client.get_named_cookie("moka_console").await.expect("logged in");
        format!("moka_console={}", c.value())
    }

    /// Reloads `url` until `check` holds on the text of `css`, for up to `within`.
    pub async fn wait_text(&self, url: &str, css: &str, within: Duration, check: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            self.goto(url).await;
            let text = match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if check(&text) || tokio::time::Instant::now() > deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// A PNG of the page as it is now, at `path`.
    pub async fn screenshot(&self, path: &Path) {
        if let Ok(png) = self.client.screenshot().await {
            let _ = std::fs::create_dir_all(path.parent().unwrap());
            let _ = std::fs::write(path, png);
        }
    }

    /// Quits Chromium, then stops chromedriver (by its pid) and removes the profile and the
    /// browser's TMPDIR.
    pub async fn close(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client.clone().close()).await;
        let _ = self.driver.lock().unwrap().start_kill();
        let _ = std::fs::remove_dir_all(&self.own);
    }
}

/// Where screenshots go: `target/console-screenshots/`.
pub fn screenshot_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots").join(format!("{name}.png"))
}

/// Runs `body` with a browser; if it panics, saves a screenshot named after the test first.
pub async fn with_browser<F, Fut>(name: &str, body: F)
where
    F: FnOnce(Arc<Browser>) -> Fut,
    Fut: Future<Output = ()>,
{
    let browser = Arc::new(Browser::start().await);
    let outcome = std::panic::AssertUnwindSafe(body(browser.clone())).catch_unwind().await;
    if outcome.is_err() {
        let path = screenshot_path(&format!("failed-{name}"));
        browser.screenshot(&path).await;
        eprintln!("screenshot of the failing page: {}", path.display());
    }
    browser.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

//! The ingress against hostile and odd clients: huge parameter lists, connections that trickle,
//! stall or idle, more connections than allowed, a request sent many times at once, and requests
//! hyper refuses before any handler runs. Every answer is the JSON error shape.

use std::time::{Duration, Instant};

use moka_ingest::ingress::REPLAY_HEADER;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{self, signed, TestBroker, TestIngress, PAYLOAD};

/// Short timeouts, so that the test sees them all in a few seconds.
const SHORT: &[(&str, &str)] =
    &[("ingress.header_timeout_ms", "600"), ("ingress.body_timeout_ms", "600"), ("ingress.idle_timeout_ms", "900")];

/// Reads until the server closes the connection (or `within` passes); returns what was read and
/// whether it was closed in time.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

/// The status and the JSON body of a raw HTTP answer.
fn parse_answer(raw: &[u8]) -> (u16, serde_json::Value) {
    let text = String::from_utf8_lossy(raw);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("an HTTP answer: {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("a head: {text:?}"));
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
    (status, serde_json::from_str(body).unwrap_or_else(|e| panic!("a JSON body ({e}): {text:?}")))
}

async fn send_raw(addr: std::net::SocketAddr, bytes: &[u8]) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before reading everything: a failed write is fine.
    let _ = stream.write_all(bytes).await;
    let (raw, _) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    parse_answer(&raw)
}

#[tokio::test]
async fn a_body_with_thousands_of_parameters_is_refused_with_its_own_code_before_any_work() {
    // Issue 9, point 1: 160,000 distinct names cost 32 s of CPU, before any signature check.
    let broker = TestBroker::new().await;
    let ingress = TestIngress::spawn(&helpers::settings(&broker.prefix, &[])).await;
    let many: String = (0..120_000).map(|i| format!("{i:x}=&")).collect();
    let answer = ingress.post_form(many).await;
    assert_eq!((answer.status, answer.code), (400, 1006), "{}", answer.message);
    assert!(answer.message.contains("at most 32"), "{}", answer.message);
    let json = format!("{{{}}}", (0..50_000).map(|i| format!(r#""k{i}":"v""#)).collect::<Vec<_>>().join(","));
    let r = ingress.client.post(&ingress.url).header("content-type", "application/json").body(json);
    let answer = helpers::Answer::read(r.send().await.unwrap()).await;
    assert_eq!((answer.status, answer.code), (400, 1006), "{}", answer.message);
    // A JSON value that is not a string is refused without being read into memory.
    let nested = format!(r#"{{"payload":{}1{}}}"#, "[".repeat(100), "]".repeat(100));
    let r = ingress.client.post(&ingress.url).header("content-type", "application/json").body(nested);
    assert_eq!(helpers::Answer::read(r.send().await.unwrap()).await.code, 1003);
    assert_eq!(ingress.post_form(signed(PAYLOAD).form_body()).await.code, 0);
    ingress.stop().await;
}

#[tokio::test]
async fn connections_that_trickle_stall_or_idle_are_closed_within_their_timeouts_while_signed_requests_are_answered() {
    // Issue 9, point 2: such connections stayed open for as long as the client liked.
    let broker = TestBroker::new().await;
    let ingress = TestIngress::spawn(&helpers::settings(&broker.prefix, SHORT)).await;
    let addr = ingress.addr;
    let started = Instant::now();

    // Headers at a byte every 100 ms, for ever: cut off by the header timeout.
    let trickle = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let head = b"POST /api/v2/moka_candidates HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: ";
        for &b in head.iter().chain(std::iter::repeat(&b'a')) {
            if s.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if started.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        let (raw, closed) = read_until_closed(&mut s, Duration::from_secs(1)).await;
        (closed || raw.is_empty(), started.elapsed())
    });
    // A head announcing a 1 MiB body, then silence: answered 408 by the body timeout.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"POST /api/v2/moka_candidates HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1048576\r\n\r\npayload=")
        .await
        .unwrap();
    // Connected, and nothing sent at all.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // A keep-alive connection after one good request.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let body = signed(r#"{"id":"idle-1"}"#).form_body();
    let request = format!(
        "POST /api/v2/moka_candidates HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    idle.write_all(request.as_bytes()).await.unwrap();

    // Meanwhile, signed requests are answered.
    for i in 0..5 {
        let answer = ingress.post_form(signed(&format!(r#"{{"id":"meanwhile-{i}"}}"#)).form_body()).await;
        assert_eq!(answer.code, 0, "{}", answer.message);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (raw, closed) = read_until_closed(&mut stalled, Duration::from_secs(5)).await;
    assert!(closed, "the stalled body's connection is closed");
    let (status, body) = parse_answer(&raw);
    assert_eq!((status, body["error_code"].as_u64()), (408, Some(1007)), "{body}");

    let (raw, closed) = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(
        closed && raw.is_empty(),
        "a connection that sends nothing is closed by the header timeout: {closed} {:?}",
        String::from_utf8_lossy(&raw)
    );

    let (raw, closed) = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(closed, "the idle keep-alive connection is closed");
    assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 200"), "after its answer");

    let (closed, at) = trickle.await.unwrap();
    assert!(closed, "the trickling connection is closed");
    assert!(at < Duration::from_secs(5), "within the header timeout, not when the client gave up: {at:?}");
    assert_eq!(broker.wait_depth(&broker.topology.queue, 6).await, 6, "the idle one's request and the five others");
    let metrics = ingress.client.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    for reason in ["header_timeout", "idle_timeout"] {
        assert!(
            metrics.contains(&format!(r#"moka_ingress_connections_closed_total{{reason="{reason}"}}"#)),
            "{reason}"
        );
    }
    assert!(metrics.contains(r#"moka_ingress_requests_total{outcome="body_timeout"}"#));
    ingress.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once_and_counted() {
    let broker = TestBroker::new().await;
    let ingress = TestIngress::spawn(&helpers::settings(&broker.prefix, &[("ingress.max_connections", "4")])).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(ingress.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = TcpStream::connect(ingress.addr).await.unwrap();
    let _ = over.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (raw, closed) = read_until_closed(&mut over, Duration::from_secs(2)).await;
    assert!(closed && raw.is_empty(), "the fifth connection is closed without an answer");
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ingress.post_form(signed(PAYLOAD).form_body()).await.code, 0, "room again once they are gone");
    let metrics = reqwest::get(format!("http://{}/metrics", ingress.addr)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("moka_ingress_connections_refused_total"), "{metrics}");
    ingress.stop().await;
}

#[tokio::test]
async fn a_request_sent_a_hundred_times_at_once_is_enqueued_once() {
    // Issue 9, point 6: the cache was read before publishing and written after the confirm, so
    // 100 concurrent copies were enqueued 1 to 6 times.
    let broker = TestBroker::new().await;
    let ingress = TestIngress::spawn(&helpers::settings(&broker.prefix, &[])).await;
    for round in 0..3 {
        let body = signed(&format!(r#"{{"id":"concurrent-{round}"}}"#)).form_body();
        let answers = futures_util::future::join_all((0..100).map(|_| ingress.post_form(body.clone()))).await;
        assert!(answers.iter().all(|a| a.code == 0), "every copy is answered ok");
        let fresh = answers.iter().filter(|a| a.headers.get(REPLAY_HEADER).is_none()).count();
        assert_eq!(fresh, 1, "round {round}: one copy enqueued, the others answered as replays");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids: Vec<String> = broker.envelopes(&broker.topology.queue).await.into_iter().map(|e| e.meta.moka_id).collect();
    assert_eq!(ids, ["concurrent-0", "concurrent-1", "concurrent-2"]);
    ingress.stop().await;
}

#[tokio::test]
async fn every_refusal_is_json_even_those_made_before_any_handler_runs() {
    let broker = TestBroker::new().await;
    let ingress = TestIngress::spawn(&helpers::settings(&broker.prefix, &[])).await;
    let addr = ingress.addr;
    let long_uri = format!("POST /api/v2/moka_candidates?x={} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(70_000));
    // Over hyper's own cap (about 400 KB, which depends on how the bytes arrive), and over the
    // ingress's 64 KiB.
    let head_with =
        |n: usize| format!("POST /api/v2/moka_candidates HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "a".repeat(n));
    let (big_head, head_over_64k) = (head_with(500_000), head_with(70_000));
    let many_headers: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many_headers = format!("POST /api/v2/moka_candidates HTTP/1.1\r\nHost: a\r\n{many_headers}\r\n");
    let cases: Vec<(&str, Vec<u8>, u16, u64)> = vec![
        ("unknown path", b"POST /nowhere HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n".to_vec(), 404, 1008),
        ("wrong method", b"GET /api/v2/moka_candidates HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 405, 1009),
        (
            "wrong method on a GET path",
            b"POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n".to_vec(),
            405,
            1009,
        ),
        ("URI too long", long_uri.into_bytes(), 414, 1011),
        ("head too large", big_head.into_bytes(), 431, 1010),
        ("head over 64 KiB", head_over_64k.into_bytes(), 431, 1010),
        ("too many headers", many_headers.into_bytes(), 431, 1010),
        (
            "bad Content-Length",
            b"POST /api/v2/moka_candidates HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n".to_vec(),
            400,
            1003,
        ),
        ("not HTTP", b"HELLO\r\n\r\n".to_vec(), 400, 1003),
    ];
    for (what, bytes, status, code) in cases {
        let (got_status, body) = send_raw(addr, &bytes).await;
        assert_eq!((got_status, body["error_code"].as_u64()), (status, Some(code)), "{what}: {body}");
        assert!(body["error_message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {body}");
    }
    // A wrong method says which ones the path takes.
    for (path, allowed) in [("/healthz", "GET"), ("/api/v2/moka_candidates", "POST")] {
        let r = ingress.client.delete(format!("http://127.0.0.1:{}{path}", addr.port())).send().await.unwrap();
        assert_eq!(r.status(), 405, "{path}");
        let allow = r.headers().get("allow").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        assert!(allow.contains(allowed), "{path}: Allow: {allow}");
    }
    assert_eq!(ingress.post_form(signed(PAYLOAD).form_body()).await.code, 0, "still serving");
    ingress.stop().await;
}

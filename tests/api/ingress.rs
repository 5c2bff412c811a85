//! The signed ingress against the real RabbitMQ.

use std::time::{Duration, Instant};

use moka_ingest::{
    broker::topology::SUBMISSION_KEY,
    ingress::{
        signature::{self, Encoding},
        MESSAGE_ID_HEADER, REPLAY_HEADER, REQUEST_ID_HEADER,
    },
    sign::SignedRequest,
};

use crate::helpers::{
    self, now, poll::eventually, proxy::Proxy, signed, Answer, TestBroker, TestIngress, ACCESS_KEY, PAYLOAD, SECRET,
};

/// A payload with every character that encodings disagree on.
const TRICKY: &str = r#"{"id":"tricky-1","name":"张 三 & 李=四","note":"a+b %20 ~x* 100% {\"q\":1}"}"#;

#[tokio::test]
async fn a_signed_request_lands_in_the_queue_with_the_envelope_and_the_exact_payload() {
    let broker = TestBroker::new().await;
    let ingress = TestIngress::spawn(&helpers::settings(&broker.prefix, &[])).await;
    let request = signed(PAYLOAD);

    let answer = ingress.post_form(request.form_body()).await;

    assert_eq!((answer.status, answer.code, answer.message.as_str()), (200, 0, "ok"));
    let envs = broker.envelopes(&broker.topology.queue).await;
    assert_eq!(envs.len(), 1);
    let env = &envs[0];
    assert_eq!(env.payload, PAYLOAD, "the raw payload travels unchanged");
    let meta = &env.meta;
    assert_eq!((meta.moka_id.as_str(), meta.access_key.as_str(), meta.tonce), ("cand-1", ACCESS_KEY, request.tonce));
    assert_eq!(meta.message_id.get_version_num(), 7);
    assert_eq!(answer.headers[MESSAGE_ID_HEADER].to_str().unwrap(), meta.message_id.to_string());
    assert_eq!(
        answer.headers[REQUEST_ID_HEADER], answer.headers[MESSAGE_ID_HEADER],
        "no request id given: the message id"
    );
    assert!((chrono::Utc::now() - meta.received_at).num_seconds().abs() < 30);
    ingress.stop().await;
}

#[tokio::test]
async fn each_access_key_verifies_only_in_its_declared_encoding() {
    let broker = TestBroker::new().await;
    let keys = format!("{ACCESS_KEY}:{SECRET},plus-key:{SECRET},form-key:{SECRET}");
    let settings =
        helpers::settings(&broker.prefix, &[("keys", &keys), ("key_encodings", "plus-key:plus,form-key:form")]);
    let ingress = TestIngress::spawn(&settings).await;
    let declared = [(ACCESS_KEY, Encoding::Raw), ("plus-key", Encoding::Plus), ("form-key", Encoding::Form)];
    for (key, encoding) in declared {
        let request = SignedRequest::new(key, SECRET, TRICKY, now(), encoding);
        let answer = ingress.post_form(request.form_body()).await;
        assert_eq!((answer.status, answer.code), (200, 0), "{key} {encoding:?}: {}", answer.message);
        for other in Encoding::ALL.into_iter().filter(|e| *e != encoding) {
            let request = SignedRequest::new(key, SECRET, TRICKY, now() + 1, other);
            let answer = ingress.post_form(request.form_body()).await;
            assert_eq!((answer.status, answer.code), (401, 2002), "{key} signed {other:?}");
            assert!(
                answer.message.contains(&format!("made with the `{}` encoding", other.name())),
                "{}",
                answer.message
            );
        }
    }
    let envs = broker.envelopes(&broker.topology.queue).await;
    assert_eq!(envs.len(), 3);
    assert!(envs.iter().all(|e| e.payload == TRICKY));
    ingress.stop().await;
}

#[tokio::test]
async fn a_signature_verifies_one_payload_only_and_the_genuine_request_is_not_taken_for_a_replay() {
    // Issue 9, point 7: with every encoding tried, `x y@a.com` verified with the signature of
    // `x+y@a.com`, was stored, and the genuine request was then answered as a replay.
    let broker = TestBroker::new().await;
    let keys = format!("{ACCESS_KEY}:{SECRET},form-key:{SECRET}");
    let settings = helpers::settings(&broker.prefix, &[("keys", &keys), ("key_encodings", "form-key:form")]);
    let ingress = TestIngress::spawn(&settings).await;
    let genuine = r#"{"id":"plus-1","email":"x+y@a.com"}"#;
    let tampered = r#"{"id":"plus-1","email":"x y@a.com"}"#;
    for (key, encoding) in [(ACCESS_KEY, Encoding::Raw), ("form-key", Encoding::Form)] {
        let good = SignedRequest::new(key, SECRET, genuine, now(), encoding);
        let forged = SignedRequest { payload: tampered.to_owned(), ..good.clone() };
        let answer = ingress.post_form(forged.form_body()).await;
        assert_eq!((answer.status, answer.code), (401, 2002), "{encoding:?}: the tampered payload is refused");
        let answer = ingress.post_form(good.form_body()).await;
        assert_eq!(answer.code, 0, "{encoding:?}: {}", answer.message);
        assert!(answer.headers.get(REPLAY_HEADER).is_none(), "{encoding:?}: the genuine request is enqueued");
    }
    let envs = broker.envelopes(&broker.topology.queue).await;
    assert_eq!(envs.iter().map(|e| e.payload.as_str()).collect::<Vec<_>>(), [genuine, genuine]);
    ingress.stop().await;
}

#[tokio::test]
async fn parameters_in_the_query_string_or_a_json_body_are_accepted() {
    let broker = TestBroker::new().await;
    let ingress = TestIngress::spawn(&helpers::settings(&broker.prefix, &[])).await;
    let r = signed(TRICKY);
    let query = ingress.client.post(format!("{}?{}", ingress.url, r.form_body())).send().await.unwrap();
    assert_eq!(Answer::read(query).await.code, 0);
    let r = SignedRequest::new(ACCESS_KEY, SECRET, PAYLOAD, now(), Encoding::Raw);
    let json = serde_json::json!({"payload": r.payload, "access_key": r.access_key, "tonce": r.tonce.to_string(), "signature": r.signature});
    let answer = Answer::read(ingress.client.post(&ingress.url).json(&json).send().await.unwrap()).await;
    assert_eq!((answer.status, answer.code), (200, 0), "{}", answer.message);
    assert_eq!(broker.envelopes(&broker.topology.queue).await.len(), 2);
    ingress.stop().await;
}

#[tokio::test]
async fn tampered_or_misaddressed_requests_are_rejected_without_touching_the_broker() {
    let broker = TestBroker::new().await;
    let ingress = TestIngress::spawn(&helpers::settings(&broker.prefix, &[])).await;
    let good = signed(TRICKY);
    let form = |payload: &str, key: &str, sig: &str| {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("access_key", key)
            .append_pair("payload", payload)
            .append_pair("tonce", &good.tonce.to_string())
            .append_pair("signature", sig)
            .finish()
    };
    let tonce = good.tonce.to_string();
    let params = [("access_key", ACCESS_KEY), ("payload", TRICKY), ("tonce", tonce.as_str())];
    // Signed for another path: HMAC over "POST|/api/v2/other|...".
    let other_path = {
        use hmac::{Hmac, Mac};
        let text = signature::string_to_sign(&params, Encoding::Raw).replace(signature::PATH, "/api/v2/other");
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(text.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    };
    let wrong_secret = signature::sign(b"another-secret-0123456789", &params, Encoding::Form);
    let cases = [
        ("tampered payload", form(&TRICKY.replace("tricky-1", "tricky-2"), ACCESS_KEY, &good.signature), 401, 2002),
        ("wrong path", form(TRICKY, ACCESS_KEY, &other_path), 401, 2002),
        ("wrong secret", form(TRICKY, ACCESS_KEY, &wrong_secret), 401, 2002),
        ("unknown access key", form(TRICKY, "someone-else", &good.signature), 401, 2001),
        ("truncated signature", form(TRICKY, ACCESS_KEY, &good.signature[..40]), 401, 2002),
        ("empty signature", form(TRICKY, ACCESS_KEY, ""), 401, 2002),
        ("non-hex signature", form(TRICKY, ACCESS_KEY, &"z".repeat(64)), 401, 2002),
    ];
    for (what, body, status, code) in cases {
        let answer = ingress.post_form(body).await;
        assert_eq!((answer.status, answer.code), (status, code), "{what}: {}", answer.message);
        assert!(!answer.message.contains(SECRET), "{what}: the secret is never echoed");
    }
    // Uppercase hex of the right signature is fine.
    let answer = ingress.post_form(form(TRICKY, ACCESS_KEY, &good.signature.to_uppercase())).await;
    assert_eq!(answer.code, 0, "{}", answer.message);
    assert_eq!(broker.wait_depth(&broker.topology.queue, 1).await, 1, "only the valid request was enqueued");
    ingress.stop().await;
}

#[tokio::test]
async fn missing_duplicated_or_malformed_parameters_are_refused_with_their_code() {
    let broker = TestBroker::new().await;
    let ingress = TestIngress::spawn(&helpers::settings(&broker.prefix, &[])).await;
    let r = signed(PAYLOAD);
    let body = r.form_body();
    let without_tonce = body.split('&').filter(|p| !p.starts_with("tonce=")).collect::<Vec<_>>().join("&");
    let answer = ingress.post_form(without_tonce).await;
    assert_eq!((answer.status, answer.code), (400, 1001));
    assert!(answer.message.contains("tonce"), "{}", answer.message);

    let answer = ingress.post_form(format!("{body}&tonce={}", r.tonce)).await;
    assert_eq!((answer.status, answer.code), (400, 1002), "{}", answer.message);
    let dup = ingress
        .client
        .post(format!("{}?signature={}", ingress.url, r.signature))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(Answer::read(dup).await.code, 1002, "a parameter in both query and body is a duplicate");

    for (payload, want) in
        [("[1,2]", "JSON object"), (r#"{"name":"x"}"#, "id is missing"), (r#"{"id":7}"#, "must be a string")]
    {
        let answer = ingress.post_form(signed(payload).form_body()).await;
        assert_eq!((answer.status, answer.code), (400, 1004), "{payload}");
        assert!(answer.message.contains(want), "{payload}: {}", answer.message);
    }
    assert_eq!(broker.depth(&broker.topology.queue).await, 0);
    ingress.stop().await;
}

#[tokio::test]
async fn tonce_inside_the_window_is_accepted_and_outside_is_rejected() {
    let broker = TestBroker::new().await;
    let ingress = TestIngress::spawn(&helpers::settings(&broker.prefix, &[("ingress.tonce_window_secs", "120")])).await;
    for (offset, ok) in [(-119, true), (119, true), (-121, false), (121, false)] {
        let r = SignedRequest::new(ACCESS_KEY, SECRET, PAYLOAD, now() + offset, Encoding::Raw);
        let answer = ingress.post_form(r.form_body()).await;
        if ok {
            assert_eq!((answer.status, answer.code), (200, 0), "offset {offset}: {}", answer.message);
        } else {
            assert_eq!((answer.status, answer.code), (401, 2003), "offset {offset}");
        }
    }
    // Milliseconds are understood, and different requests may share a tonce.
    let ms = now() * 1000;
    for id in ["same-tonce-a", "same-tonce-b"] {
        let r = SignedRequest::new(ACCESS_KEY, SECRET, &format!(r#"{{"id":"{id}"}}"#), ms, Encoding::Raw);
        assert_eq!(ingress.post_form(r.form_body()).await.code, 0);
    }
    assert_eq!(broker.wait_depth(&broker.topology.queue, 4).await, 4);
    ingress.stop().await;
}

#[tokio::test]
async fn an_exact_repeat_of_an_accepted_request_is_answered_ok_but_enqueued_once() {
    let broker = TestBroker::new().await;
    let ingress = TestIngress::spawn(&helpers::settings(&broker.prefix, &[])).await;
    let body = signed(PAYLOAD).form_body();
    let first = ingress.post_form(body.clone()).await;
    let second = ingress.post_form(body).await;
    assert_eq!((first.code, second.code), (0, 0));
    assert!(first.headers.get(REPLAY_HEADER).is_none());
    assert_eq!(second.headers[REPLAY_HEADER], "true");
    assert_eq!(broker.envelopes(&broker.topology.queue).await.len(), 1);
    ingress.stop().await;
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let broker = TestBroker::new().await;
    let ingress = TestIngress::spawn(&helpers::settings(&broker.prefix, &[("ingress.body_limit_bytes", "2048")])).await;
    let big = format!(r#"{{"id":"big","note":"{}"}}"#, "x".repeat(4096));
    let answer = ingress.post_form(signed(&big).form_body()).await;
    assert_eq!((answer.status, answer.code), (413, 1005), "{}", answer.message);
    assert_eq!(ingress.post_form(signed(PAYLOAD).form_body()).await.code, 0, "small ones still pass");
    ingress.stop().await;
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_gets_413_too() {
    let broker = TestBroker::new().await;
    let ingress = TestIngress::spawn(&helpers::settings(&broker.prefix, &[("ingress.body_limit_bytes", "2048")])).await;
    let big = signed(&format!(r#"{{"id":"big","note":"{}"}}"#, "x".repeat(4096))).form_body();
    // A stream has no Content-Length: the limit is applied to the bytes as they arrive.
    let chunks = big.into_bytes().chunks(1000).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>();
    let r = ingress
        .client
        .post(&ingress.url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    let answer = Answer::read(r).await;
    assert_eq!((answer.status, answer.code), (413, 1005), "{}", answer.message);
    assert_eq!(broker.envelopes(&broker.topology.queue).await.len(), 0);
    ingress.stop().await;
}

#[tokio::test]
async fn the_clients_request_id_is_echoed_and_a_missing_one_is_made_up() {
    let broker = TestBroker::new().await;
    let ingress = TestIngress::spawn(&helpers::settings(&broker.prefix, &[])).await;
    let post = |request_id: Option<&'static str>, body: String| {
        let mut r = ingress.client.post(&ingress.url).header("content-type", "application/x-www-form-urlencoded");
        if let Some(id) = request_id {
            r = r.header(REQUEST_ID_HEADER, id);
        }
        async move { Answer::read(r.body(body).send().await.unwrap()).await }
    };
    let accepted = post(Some("moka-trace-42"), signed(PAYLOAD).form_body()).await;
    assert_eq!((accepted.code, accepted.headers[REQUEST_ID_HEADER].to_str().unwrap()), (0, "moka-trace-42"));
    let rejected = post(Some("moka-trace-43"), "payload=%7B%7D".into()).await;
    assert_eq!((rejected.code, rejected.headers[REQUEST_ID_HEADER].to_str().unwrap()), (1001, "moka-trace-43"));
    // No id, or one that is not a sane header value: a fresh UUIDv7.
    for given in [None, Some(" ")] {
        let answer = post(given, "payload=%7B%7D".into()).await;
        let id = uuid::Uuid::parse_str(answer.headers[REQUEST_ID_HEADER].to_str().unwrap()).expect("a uuid");
        assert_eq!(id.get_version_num(), 7);
    }
    ingress.stop().await;
}

#[tokio::test]
async fn both_secrets_verify_during_a_rotation() {
    let broker = TestBroker::new().await;
    let keys = format!("{ACCESS_KEY}:{SECRET},{ACCESS_KEY}:new-secret-0123456789abc");
    let ingress = TestIngress::spawn(&helpers::settings(&broker.prefix, &[("keys", &keys)])).await;
    for secret in [SECRET, "new-secret-0123456789abc"] {
        let r = SignedRequest::new(ACCESS_KEY, secret, PAYLOAD, now(), Encoding::Raw);
        assert_eq!(ingress.post_form(r.form_body()).await.code, 0, "{secret}");
    }
    assert_eq!(broker.wait_depth(&broker.topology.queue, 2).await, 2);
    ingress.stop().await;
}

#[tokio::test]
async fn an_unroutable_publish_is_answered_503_and_a_retry_succeeds_once_routable() {
    let broker = TestBroker::new().await;
    let ingress = TestIngress::spawn(&helpers::settings(&broker.prefix, &[])).await;
    let t = &broker.topology;
    broker.ch.queue_unbind(&t.queue, &t.exchange, SUBMISSION_KEY, Default::default()).await.unwrap();
    let body = signed(PAYLOAD).form_body();
    let answer = ingress.post_form(body.clone()).await;
    assert_eq!((answer.status, answer.code), (503, 5001), "{}", answer.message);
    assert!(answer.message.contains("unroutable"), "{}", answer.message);

    broker.ch.queue_bind(&t.queue, &t.exchange, SUBMISSION_KEY, Default::default(), Default::default()).await.unwrap();
    let answer = ingress.post_form(body).await;
    assert_eq!((answer.status, answer.code), (200, 0), "a repeat of a failed request is processed normally");
    assert!(answer.headers.get(REPLAY_HEADER).is_none());
    assert_eq!(broker.envelopes(&t.queue).await.len(), 1);
    ingress.stop().await;
}

#[tokio::test]
async fn broker_loss_answers_503_at_once_and_the_ingress_recovers_without_restart() {
    let broker = TestBroker::new().await;
    let proxy = Proxy::start("127.0.0.1:5672").await;
    let url = proxy.url();
    let ingress = TestIngress::spawn(&helpers::settings(&broker.prefix, &[("amqp_url", &url)])).await;
    let ready = format!("http://{}/readyz", ingress.addr);
    assert_eq!(ingress.client.get(&ready).send().await.unwrap().status(), 200);

    proxy.cut();
    let ready_status = || async { ingress.client.get(&ready).send().await.unwrap().status() };
    eventually(Duration::from_secs(10), "readyz turns red after the broker is lost", || async {
        ready_status().await != 200
    })
    .await;
    let started = Instant::now();
    let answer = ingress.post_form(signed(PAYLOAD).form_body()).await;
    assert_eq!((answer.status, answer.code), (503, 5001));
    assert!(started.elapsed() < Duration::from_secs(1), "no hanging: {:?}", started.elapsed());

    proxy.restore();
    eventually(Duration::from_secs(15), "the ingress reconnects by itself", || async { ready_status().await == 200 })
        .await;
    let answer = ingress.post_form(signed(PAYLOAD).form_body()).await;
    assert_eq!((answer.status, answer.code), (200, 0), "{}", answer.message);
    assert_eq!(broker.envelopes(&broker.topology.queue).await.len(), 1);
    ingress.stop().await;
}

#[tokio::test]
async fn with_several_broker_addresses_the_ingress_moves_on_to_the_next_when_its_node_goes_away() {
    let broker = TestBroker::new().await;
    // Two "nodes" (proxies to the one real broker); the first is down at start.
    let (a, b) = (Proxy::start("127.0.0.1:5672").await, Proxy::start("127.0.0.1:5672").await);
    a.cut();
    let urls = format!("{}, {}", a.url(), b.url());
    let ingress = TestIngress::spawn(&helpers::settings(&broker.prefix, &[("amqp_url", &urls)])).await;
    let ready = format!("http://127.0.0.1:{}/readyz", ingress.addr.port());
    // A new candidate each time: a repeat would be answered from the replay cache, not the broker.
    let sent = std::sync::atomic::AtomicUsize::new(0);
    let accepted = || async {
        if ingress.client.get(&ready).send().await.unwrap().status() != 200 {
            return false;
        }
        let n = sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let answer =
            ingress.post_form(signed(&helpers::candidate_payload(&format!("node-{n}"), "x")).form_body()).await;
        answer.status == 200 && answer.headers.get(REPLAY_HEADER).is_none()
    };
    eventually(Duration::from_secs(10), "ready through the address that answers", accepted).await;

    // Its node goes away and stays away: it moves on to the other one, which is back.
    a.restore();
    b.cut();
    eventually(Duration::from_secs(15), "accepting again through the other address", accepted).await;
    assert_eq!(broker.envelopes(&broker.topology.queue).await.len(), 2, "one message per request answered 200");
    ingress.stop().await;
}

#[tokio::test]
async fn a_confirm_that_does_not_arrive_in_time_is_answered_503() {
    let broker = TestBroker::new().await;
    let proxy = Proxy::start("127.0.0.1:5672").await;
    let url = proxy.url();
    let settings = helpers::settings(&broker.prefix, &[("amqp_url", &url), ("ingress.confirm_timeout_ms", "300")]);
    let ingress = TestIngress::spawn(&settings).await;

    // The broker takes the message but its confirm never comes back in time.
    proxy.stall();
    let started = Instant::now();
    let answer = ingress.post_form(signed(PAYLOAD).form_body()).await;
    assert_eq!((answer.status, answer.code), (503, 5001), "{}", answer.message);
    assert!(answer.message.contains("no publisher confirm"), "{}", answer.message);
    assert!(started.elapsed() < Duration::from_secs(3), "answered at the timeout: {:?}", started.elapsed());

    // Moka's retry after the broker answers again is accepted (the failed attempt was not
    // remembered as a replay). The first copy did reach the queue: a 503 means "not known to be
    // queued", and the worker stores a repeated submission once.
    proxy.unstall();
    let retry = ingress.post_form(signed(PAYLOAD).form_body()).await;
    assert_eq!((retry.status, retry.code), (200, 0), "{}", retry.message);
    assert!(retry.headers.get(REPLAY_HEADER).is_none());
    assert_eq!(broker.wait_depth(&broker.topology.queue, 2).await, 2);
    ingress.stop().await;
}

/// An ingress whose broker connection goes through a proxy that can hold the broker's confirms
/// back, and requests sent to it from tasks of their own: what group publishing is seen through.
struct HeldConfirms {
    broker: TestBroker,
    proxy: Proxy,
    ingress: std::sync::Arc<TestIngress>,
}

impl HeldConfirms {
    async fn start(settings: &[(&str, &str)]) -> HeldConfirms {
        let broker = TestBroker::new().await;
        let proxy = Proxy::start("127.0.0.1:5672").await;
        let url = proxy.url();
        let mut all = vec![("amqp_url", url.as_str()), ("ingress.confirm_timeout_ms", "20000")];
        all.extend_from_slice(settings);
        let ingress = std::sync::Arc::new(TestIngress::spawn(&helpers::settings(&broker.prefix, &all)).await);
        HeldConfirms { broker, proxy, ingress }
    }

    /// Sends the candidate `id`, signed, from its own task.
    fn send(&self, id: String) -> tokio::task::JoinHandle<Answer> {
        let ingress = self.ingress.clone();
        tokio::spawn(async move { ingress.post_form(signed(&format!(r#"{{"id":"{id}"}}"#)).form_body()).await })
    }

    /// Waits for every answer and checks that each is ok.
    async fn all_ok(requests: Vec<tokio::task::JoinHandle<Answer>>) {
        for r in requests {
            let answer = r.await.unwrap();
            assert_eq!((answer.status, answer.code), (200, 0), "{}", answer.message);
        }
    }

    /// The candidate ids in the queue, sorted (a group's submissions each count).
    async fn queued_ids(&self) -> Vec<String> {
        let envelopes = self.broker.envelopes(&self.broker.topology.queue).await;
        let mut ids: Vec<String> = envelopes.into_iter().map(|e| e.meta.moka_id).collect();
        ids.sort();
        ids
    }

    async fn messages(&self) -> u32 {
        self.broker.depth(&self.broker.topology.queue).await
    }

    async fn wait_messages(&self, n: u32) -> u32 {
        self.broker.wait_depth(&self.broker.topology.queue, n).await
    }

    async fn stop(self) {
        std::sync::Arc::into_inner(self.ingress).expect("requests are done").stop().await;
    }
}

/// `prefix-0` … `prefix-{n-1}`, sorted as [`HeldConfirms::queued_ids`] sorts.
fn ids(prefix: &str, n: usize) -> Vec<String> {
    let mut ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn requests_that_arrive_while_a_publish_awaits_its_confirm_go_together_and_none_is_answered_before_it() {
    let held = HeldConfirms::start(&[]).await;

    // With every confirm held back, the publishing loop (one per channel; one channel by default)
    // takes the first request and waits for its confirm; the nine that come next gather, unanswered.
    held.proxy.stall();
    let mut requests = vec![held.send("p-0".into())];
    assert_eq!(held.wait_messages(1).await, 1, "the first is published at once, alone");
    requests.extend((1..10).map(|i| held.send(format!("p-{i}"))));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(held.messages().await, 1, "the rest wait for its confirm");
    assert!(requests.iter().all(|r| !r.is_finished()), "no answer before the broker's confirm");

    // Once the confirm comes, the nine that gathered go as one group, and all ten are answered
    // ok: ten submissions in two messages.
    held.proxy.unstall();
    HeldConfirms::all_ok(requests).await;
    assert_eq!(held.messages().await, 2, "ten requests as two messages: one alone, then one group of nine");
    assert_eq!(held.queued_ids().await, ids("p", 10), "each once");
    held.stop().await;
}

#[tokio::test]
async fn a_group_that_reaches_its_limit_goes_at_once_without_waiting_for_the_confirm_in_flight() {
    let held = HeldConfirms::start(&[("ingress.group_max_messages", "4")]).await;

    // Every confirm held back: the first request is published alone and its confirm awaited.
    held.proxy.stall();
    let mut requests = vec![held.send("f-0".into())];
    assert_eq!(held.wait_messages(1).await, 1, "the first is published at once, alone");
    // Nine more: two full groups of four go while that confirm is still awaited; the ninth waits.
    requests.extend((1..10).map(|i| held.send(format!("f-{i}"))));
    assert_eq!(held.wait_messages(3).await, 3, "full groups do not wait for the confirm");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(held.messages().await, 3, "a group that is not full waits");
    assert!(requests.iter().all(|r| !r.is_finished()), "no answer before the broker's confirm");

    held.proxy.unstall();
    HeldConfirms::all_ok(requests).await;
    assert_eq!(held.messages().await, 4, "one alone, two groups of four, then the last one");
    assert_eq!(held.queued_ids().await, ids("f", 10), "each once");
    held.stop().await;
}

/// A RabbitMQ policy for one test's queues, removed when dropped (also when the test fails).
struct Policy(String);

impl Policy {
    fn set(name: String, pattern: &str, definition: &str) -> Policy {
        let status = std::process::Command::new("rabbitmqctl")
            .args(["-q", "set_policy", "--apply-to", "queues", &name, pattern, definition])
            .status()
            .expect("rabbitmqctl runs");
        assert!(status.success(), "set_policy {name}");
        Policy(name)
    }
}

impl Drop for Policy {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl").args(["-q", "clear_policy", &self.0]).status();
    }
}

#[tokio::test]
async fn a_message_the_broker_nacks_is_answered_503() {
    let broker = TestBroker::new().await;
    let ingress = TestIngress::spawn(&helpers::settings(&broker.prefix, &[])).await;
    // A full queue: the submissions queue overflows with reject-publish, so the broker nacks.
    let queue = &broker.topology.queue;
    let _full = Policy::set(
        format!("{}-max-length", broker.prefix),
        &format!("^{}$", queue.replace('.', "\\.")),
        r#"{"max-length":1}"#,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answers = Vec::new();
    // The policy reaches the queue asynchronously: send until the broker refuses one.
    while answers.last().is_none_or(|a: &Answer| a.code == 0) {
        assert!(Instant::now() < deadline, "the broker never refused a message: {answers:?}");
        answers.push(ingress.post_form(signed(&format!(r#"{{"id":"full-{}"}}"#, answers.len())).form_body()).await);
    }
    let refused = answers.last().unwrap();
    assert_eq!((refused.status, refused.code), (503, 5001), "{}", refused.message);
    assert!(refused.message.contains("nack"), "{}", refused.message);
    // RabbitMQ enforces a quorum queue's limit a message late; what matters is that every message
    // answered ok is queued and the refused one is not.
    let confirmed = answers.iter().filter(|a| a.code == 0).count();
    assert_eq!(broker.envelopes(queue).await.len(), confirmed, "only what was confirmed is queued");
    ingress.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let broker = TestBroker::new().await;
    let ingress = TestIngress::spawn(&helpers::settings(&broker.prefix, &[])).await;
    ingress.post_form(signed(PAYLOAD).form_body()).await;
    let get = |path: &str| ingress.client.get(format!("http://{}{path}", ingress.addr)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(metrics.contains("moka_ingress_requests_total{outcome=\"accepted\"}"), "{metrics}");
    ingress.stop().await;
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish_and_every_ok_is_in_the_queue() {
    let broker = TestBroker::new().await;
    let ingress = TestIngress::spawn(&helpers::settings(&broker.prefix, &[])).await;
    let first_answer = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for i in 0..40 {
        let client = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).build().unwrap();
        let (url, body) = (ingress.url.clone(), signed(&format!(r#"{{"id":"c{i}"}}"#)).form_body());
        let first_answer = first_answer.clone();
        tasks.push(tokio::spawn(async move {
            let r =
                client.post(url).header("content-type", "application/x-www-form-urlencoded").body(body).send().await;
            first_answer.notify_one();
            r
        }));
    }
    // Shut down while most requests are still in flight.
    first_answer.notified().await;
    ingress.shutdown.cancel();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => {
                assert_eq!(r.status(), 200, "a request that was taken is finished, not failed");
                ok += 1;
            }
            Err(e) => assert!(e.is_connect() || e.is_request(), "only refused connections may fail: {e}"),
        }
    }
    ingress.handle.task.await.unwrap().unwrap();
    assert!(ok > 0);
    // Counted in submissions: requests that gathered went as one group message.
    let queued = broker.envelopes(&broker.topology.queue).await.len() as u32;
    assert_eq!(queued, ok, "every ok is in the queue, once");
}

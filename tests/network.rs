//! The host's network policy: a component may reach its configured endpoint and
//! nothing else, by TCP (wasi:sockets) or HTTP (wasi:http); without an endpoint, nothing.
//! Real listeners on loopback; the worker fixture tries to reach them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmtime::component::Val;
use ww_host::plugins::{ComponentHost, ComponentSpec, HostConfig, LoadError, Request};
use ww_tests::{cache_dir, component, telemetry};

const WORKER: &str = "ww:fixtures/worker@0.1.0";

/// A loopback HTTP server answering 204 to anything, counting the connections it accepted.
async fn listener() -> (String, Arc<AtomicUsize>) {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                if let Ok(n) = stream.read(&mut buffer).await
                    && n > 0
                {
                    let _ = stream
                        .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                        .await;
                }
            });
        }
    });
    (address, accepted)
}

async fn worker(endpoint: Option<String>) -> Result<ComponentHost, LoadError> {
    let config = HostConfig {
        components: vec![ComponentSpec {
            endpoint,
            ..component("fixture_worker.wasm")
        }],
        cache_dir: Some(cache_dir()),
        ..HostConfig::default()
    };
    ComponentHost::load(config, telemetry(&[])).await
}

async fn call(host: &ComponentHost, function: &str, argument: &str) -> Result<Val, String> {
    let out = host
        .invoke(
            Request::new("test.network"),
            WORKER,
            function,
            &[Val::String(argument.to_owned())],
        )
        .await
        .expect("call");
    match out.into_iter().next() {
        Some(Val::Result(Ok(value))) => Ok(value.map_or(Val::Bool(true), |v| *v)),
        Some(Val::Result(Err(Some(reason)))) => match *reason {
            Val::String(reason) => Err(reason),
            other => Err(format!("{other:?}")),
        },
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn tcp_reaches_the_endpoint_and_nothing_else() {
    let (allowed, allowed_seen) = listener().await;
    let (other, other_seen) = listener().await;
    let host = worker(Some(format!("bolt://{allowed}"))).await.unwrap();

    call(&host, "tcp-connect", &allowed).await.unwrap();
    // The listener counts a connection when its accept task gets to it.
    for _ in 0..500 {
        if allowed_seen.load(Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        allowed_seen.load(Ordering::SeqCst),
        2,
        "the start-up check and the component"
    );
    let refused = call(&host, "tcp-connect", &other).await.unwrap_err();
    assert!(refused.to_lowercase().contains("denied"), "{refused}");
    assert_eq!(other_seen.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn http_reaches_the_endpoint_and_nothing_else() {
    let (allowed, _) = listener().await;
    let (other, other_seen) = listener().await;
    let host = worker(Some(format!("http://{allowed}"))).await.unwrap();

    let status = call(&host, "http-get", &format!("http://{allowed}/x")).await;
    assert!(matches!(status, Ok(Val::U16(204))), "{status:?}");
    for url in [
        format!("http://{other}/x"),
        format!("http://localhost:{}/x", allowed.rsplit(':').next().unwrap()),
    ] {
        let refused = call(&host, "http-get", &url).await.unwrap_err();
        assert!(
            refused.to_lowercase().contains("denied"),
            "{url}: {refused}"
        );
    }
    // Nor by TCP to another port.
    assert!(call(&host, "tcp-connect", &other).await.is_err());
    assert_eq!(other_seen.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn without_an_endpoint_there_is_no_network() {
    let (address, seen) = listener().await;
    let host = worker(None).await.unwrap();
    assert!(call(&host, "tcp-connect", &address).await.is_err());
    assert!(
        call(&host, "http-get", &format!("http://{address}/"))
            .await
            .is_err()
    );
    assert_eq!(seen.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_endpoint_that_does_not_answer_is_a_start_up_error() {
    let closed = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().to_string()
    };
    let error = worker(Some(format!("bolt://{closed}")))
        .await
        .err()
        .unwrap();
    let message = error.to_string();
    assert!(message.contains("cannot reach its endpoint"), "{message}");
    assert!(message.contains(&closed), "{message}");
}

/// The caller and the worker fixtures, the worker allowed to reach `address` over HTTP.
fn relay_config(address: &str) -> HostConfig {
    HostConfig {
        components: vec![
            component("fixture_caller.wasm"),
            ComponentSpec {
                endpoint: Some(format!("http://{address}")),
                ..component("fixture_worker.wasm")
            },
        ],
        cache_dir: Some(cache_dir()),
        ..HostConfig::default()
    }
}

/// A loopback HTTP server answering 204, keeping each request's head.
async fn recording_listener() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap().to_string();
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 8192];
                if let Ok(n) = stream.read(&mut buffer).await
                    && n > 0
                {
                    let head = String::from_utf8_lossy(&buffer[..n]).into_owned();
                    kept.lock().unwrap().push(head);
                    let _ = stream
                        .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                        .await;
                }
            });
        }
    });
    (address, heads)
}

/// The driver relays `request` through the worker, which adds a baggage entry and sends
/// an HTTP request to `address`.
async fn relay(host: &ComponentHost, request: Request, address: &str) -> Vec<Val> {
    host.invoke(
        request,
        ww_tests::DRIVER,
        "relay-baggage",
        &[
            Val::String("caller.step".to_owned()),
            Val::String("relay 1".to_owned()),
            Val::String(format!("http://{address}/probe")),
        ],
    )
    .await
    .expect("call")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baggage_from_the_request_and_from_a_guest_reaches_the_deepest_component_and_the_wire() {
    let (address, heads) = recording_listener().await;
    let config = relay_config(&address);
    let host = ComponentHost::load(config, telemetry(&[]))
        .await
        .expect("load");
    // As the gateway passes on `params._meta.baggage`.
    let request = Request::new("test.baggage").with_baggage("tenant=acme,user.id=u%2042");
    let out = relay(&host, request, &address).await;
    let Some(Val::Result(Ok(Some(seen)))) = out.into_iter().next() else {
        panic!("the relay failed")
    };
    let Val::List(entries) = *seen else {
        panic!("{seen:?}")
    };
    let entries: Vec<(String, String)> = entries
        .into_iter()
        .map(|entry| match entry {
            Val::Tuple(pair) => match pair.as_slice() {
                [Val::String(k), Val::String(v)] => (k.clone(), v.clone()),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        })
        .collect();
    // The deepest component sees the caller's entries and the one a component added.
    assert_eq!(
        entries,
        [
            ("tenant".to_owned(), "acme".to_owned()),
            ("user.id".to_owned(), "u 42".to_owned()),
            ("caller.step".to_owned(), "relay 1".to_owned()),
        ]
    );
    // And the request it sent carries them all, W3C-encoded.
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let baggage = heads[0]
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("baggage")
                .then(|| value.trim().to_owned())
        })
        .expect("a baggage header");
    let mut members: Vec<&str> = baggage.split(',').collect();
    members.sort_unstable();
    assert_eq!(
        members,
        ["caller.step=relay%201", "tenant=acme", "user.id=u%2042"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_xray_propagation_outgoing_http_carries_the_xray_header_beside_traceparent() {
    let daemon = ww_tests::xray::XrayDaemon::start().await;
    let daemon_address = daemon.address();
    let (address, heads) = recording_listener().await;
    let telemetry = telemetry(&[
        ("OTEL_TRACES_EXPORTER", "xray"),
        ("AWS_XRAY_DAEMON_ADDRESS", daemon_address.as_str()),
        ("OTEL_PROPAGATORS", "tracecontext,baggage,xray"),
    ]);
    let host = ComponentHost::load(relay_config(&address), telemetry)
        .await
        .expect("load");
    relay(&host, Request::new("test.xray"), &address).await;
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let header = |wanted: &str| {
        heads[0]
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case(wanted)
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("no {wanted} in {}", heads[0]))
    };
    // The same parent in both: 00-<trace>-<span>-01 and Root=1-<8>-<24>;Parent=<span>.
    let traceparent = header("traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(
        header("x-amzn-trace-id"),
        format!(
            "Root=1-{}-{};Parent={};Sampled=1",
            &parts[1][..8],
            &parts[1][8..],
            parts[2]
        )
    );
}

/// A loopback server that takes requests and never answers; `arrived` is notified when
/// the first request's bytes are in.
async fn silent_listener() -> (String, Arc<tokio::sync::Notify>) {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap().to_string();
    let arrived = Arc::new(tokio::sync::Notify::new());
    let notify = arrived.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = socket.accept().await {
            let mut buffer = [0u8; 4096];
            if let Ok(n) = stream.read(&mut buffer).await
                && n > 0
            {
                notify.notify_one();
            }
            held.push(stream);
        }
    });
    (address, arrived)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_half_way_discards_its_instances_and_still_ends_its_spans() {
    use ww_tests::otlp::{AttrValue, OtlpReceiver};
    let (address, arrived) = silent_listener().await;
    let receiver = OtlpReceiver::grpc().await;
    let config = relay_config(&address);
    let telemetry = ww_tests::otlp_telemetry(&receiver.endpoint(), "grpc");
    let host = ComponentHost::load(config, telemetry).await.expect("load");
    host.warm_up().await.expect("instantiate");
    let caller = host.component("fixture-caller").unwrap().clone();
    let worker = host.component("fixture-worker").unwrap().clone();
    let instantiations = (caller.instantiations(), worker.instantiations());
    assert!(caller.memory_bytes() > 0 && worker.memory_bytes() > 0);
    // The caller calls the worker, which waits on an endpoint that never answers: both
    // are half-way through a call when the request's future is dropped (as a cancelled
    // request that did not stop in time, or a server shutting down, drops it).
    let params = [
        Val::String("step".to_owned()),
        Val::String("1".to_owned()),
        Val::String(format!("http://{address}/never")),
    ];
    let abandoned = host.invoke(
        Request::new("test.abandoned"),
        ww_tests::DRIVER,
        "relay-baggage",
        &params,
    );
    tokio::select! {
        outcome = abandoned => panic!("the endpoint never answers, yet: {outcome:?}"),
        () = arrived.notified() => {}
    }
    // Neither instance went back to its pool: no memory is held for them any more.
    assert_eq!((caller.memory_bytes(), worker.memory_bytes()), (0, 0));
    // The next request gets fresh instances and works.
    let out = host
        .invoke(
            Request::new("test.after"),
            ww_tests::DRIVER,
            "run",
            &[Val::String("again".to_owned()), ww_tests::mode("succeed")],
        )
        .await
        .expect("call after the abandoned one");
    assert!(matches!(out.first(), Some(Val::Result(Ok(_)))), "{out:?}");
    assert_eq!(
        (caller.instantiations(), worker.instantiations()),
        (instantiations.0 + 1, instantiations.1 + 1)
    );
    assert_eq!((caller.traps(), worker.traps()), (0, 0));
    // The abandoned request's spans were exported, each marked; its root failed with
    // the reason.
    host.telemetry().flush().await;
    let spans = receiver
        .wait_for(std::time::Duration::from_secs(10), |s| {
            s.iter().any(|s| s.name == "test.after")
        })
        .await;
    let root = spans.iter().find(|s| s.name == "test.abandoned").unwrap();
    let failure = root.failure().expect("the abandoned request failed");
    assert_eq!(failure.kind, "cancelled");
    let trace: Vec<_> = spans
        .iter()
        .filter(|s| s.trace_id == root.trace_id)
        .collect();
    let names: Vec<&str> = trace.iter().map(|s| s.name.as_str()).collect();
    for name in [
        "test.abandoned",
        "fixture-worker.fetch-with-baggage",
        "GET /never",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    // The request's own spans; the outgoing HTTP request's span belongs to wasi:http's
    // client, which ends it when its future is dropped.
    for span in trace.iter().filter(|s| !s.name.starts_with("GET ")) {
        assert_eq!(
            span.attributes.get("ww.cancelled"),
            Some(&AttrValue::Bool(true)),
            "{span:#?}"
        );
    }
}

//! The embedded store component through a real host, on a real data directory.

use std::path::{Path, PathBuf};

use wasmtime::component::Val;
use ww_host::plugins::Role;
use ww_host::plugins::{CallError, CallLimits, ComponentHost, ComponentSpec, HostConfig, Request};
use ww_tests::{cache_dir, component, telemetry};

const VECTORS: &str = "ww:memory/vector-store@0.1.0";
const GRAPH: &str = "ww:memory/graph-store@0.1.0";

fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ww-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn store(dir: &Path, limits: Option<CallLimits>) -> ComponentHost {
    let spec = ComponentSpec {
        roles: vec![Role::VectorStore, Role::GraphStore],
        data_dir: Some(dir.to_owned()),
        limits,
        ..ComponentSpec::new("embedded", component("store_embedded.wasm").path)
    };
    let config = HostConfig {
        components: vec![spec],
        cache_dir: Some(cache_dir()),
        ..HostConfig::default()
    };
    ComponentHost::load(config, telemetry(&[]))
        .await
        .expect("load store")
}

/// Call and unwrap the `result`: `Ok(value)` or `Err(error case name)`.
async fn call(
    host: &ComponentHost,
    interface: &str,
    function: &str,
    args: Vec<Val>,
) -> Result<Option<Val>, String> {
    let out = host
        .invoke(
            Request::new(format!("test.{function}")),
            interface,
            function,
            &args,
        )
        .await
        .unwrap_or_else(|e| panic!("{function}: {e}"));
    match out.into_iter().next() {
        Some(Val::Result(Ok(value))) => Ok(value.map(|v| *v)),
        Some(Val::Result(Err(Some(error)))) => match *error {
            Val::Variant(case, _) => Err(case),
            other => panic!("{other:?}"),
        },
        other => Ok(other),
    }
}

fn s(text: &str) -> Val {
    Val::String(text.to_owned())
}

fn text(value: &str) -> Val {
    Val::Variant("text".into(), Some(Box::new(s(value))))
}

fn int(value: i64) -> Val {
    Val::Variant("integer".into(), Some(Box::new(Val::S64(value))))
}

fn field(name: &str, value: Val) -> Val {
    Val::Record(vec![("name".into(), s(name)), ("value".into(), value)])
}

fn floats(values: &[f32]) -> Val {
    Val::List(values.iter().map(|x| Val::Float32(*x)).collect())
}

fn point(id: &str, vector: &[f32], session: &str, time: i64) -> Val {
    Val::Record(vec![
        ("id".into(), s(id)),
        ("vector".into(), floats(vector)),
        (
            "payload".into(),
            Val::List(vec![
                field("session", text(session)),
                field("time", int(time)),
            ]),
        ),
        ("text".into(), Val::Option(None)),
    ])
}

/// The embedder a collection records: a test one of `dimension`.
fn embedder_id(dimension: u32) -> Val {
    Val::Record(vec![
        ("model".into(), s("test-embedder")),
        ("dimension".into(), Val::U32(dimension)),
    ])
}

fn filter(must: Vec<Val>) -> Val {
    Val::Record(vec![
        ("must".into(), Val::List(must)),
        ("must-not".into(), Val::List(vec![])),
    ])
}

fn equals(name: &str, value: Val) -> Val {
    Val::Variant("equals".into(), Some(Box::new(field(name, value))))
}

fn within(name: &str, gte: Option<f64>, lte: Option<f64>) -> Val {
    let bound = |b: Option<f64>| Val::Option(b.map(|x| Box::new(Val::Float64(x))));
    Val::Variant(
        "within".into(),
        Some(Box::new(Val::Record(vec![
            ("name".into(), s(name)),
            ("gte".into(), bound(gte)),
            ("lte".into(), bound(lte)),
        ]))),
    )
}

fn episodes() -> Val {
    Val::Enum("episodes".into())
}

fn record_field<'a>(record: &'a Val, name: &str) -> &'a Val {
    let Val::Record(fields) = record else {
        panic!("{record:?}")
    };
    &fields
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .1
}

fn ids(list: Option<Val>) -> Vec<String> {
    let Some(Val::List(items)) = list else {
        panic!("{list:?}")
    };
    items
        .iter()
        .map(|item| match record_field(item, "id") {
            Val::String(id) => id.clone(),
            other => panic!("{other:?}"),
        })
        .collect()
}

async fn search(
    host: &ComponentHost,
    vector: &[f32],
    must: Vec<Val>,
    limit: u32,
    offset: u32,
) -> Result<Vec<String>, String> {
    search_by(host, vector, must, limit, offset, None)
        .await
        .map(ids)
}

async fn search_by(
    host: &ComponentHost,
    vector: &[f32],
    must: Vec<Val>,
    limit: u32,
    offset: u32,
    rescore: Option<Val>,
) -> Result<Option<Val>, String> {
    let request = Val::Record(vec![
        ("collection".into(), episodes()),
        ("vector".into(), floats(vector)),
        ("text".into(), Val::Option(None)),
        ("filter".into(), filter(must)),
        ("limit".into(), Val::U32(limit)),
        ("offset".into(), Val::U32(offset)),
        ("rescore".into(), Val::Option(rescore.map(Box::new))),
    ]);
    call(host, VECTORS, "search", vec![request]).await
}

/// `similarity-weight`·max(0, cos) + `weight`·time + `decay`·e^(−|time − origin|/scale).
fn rescore(similarity_weight: f64, weight: f64, decay: (f64, f64, f64)) -> Val {
    let linear = Val::Variant(
        "linear".into(),
        Some(Box::new(Val::Tuple(vec![s("time"), Val::Float64(weight)]))),
    );
    let (decay_weight, origin, scale) = decay;
    let exp_decay = Val::Variant(
        "exp-decay".into(),
        Some(Box::new(Val::Record(vec![
            ("field".into(), s("time")),
            ("origin".into(), Val::Float64(origin)),
            ("scale".into(), Val::Float64(scale)),
            ("weight".into(), Val::Float64(decay_weight)),
        ]))),
    );
    Val::Record(vec![
        ("similarity-weight".into(), Val::Float64(similarity_weight)),
        ("terms".into(), Val::List(vec![linear, exp_decay])),
    ])
}

fn payload_update(id: &str, fields: Vec<Val>) -> Val {
    Val::Record(vec![
        ("id".into(), s(id)),
        ("fields".into(), Val::List(fields)),
    ])
}

async fn seed(host: &ComponentHost) {
    assert_eq!(
        call(
            host,
            VECTORS,
            "ensure-collection",
            vec![episodes(), embedder_id(3)]
        )
        .await,
        Ok(None)
    );
    let points = Val::List(vec![
        point("a1", &[1.0, 0.0, 0.0], "a", 100),
        point("a2", &[0.8, 0.6, 0.0], "a", 200),
        point("a3", &[0.0, 1.0, 0.0], "a", 300),
        point("b1", &[1.0, 0.1, 0.0], "b", 150),
    ]);
    assert_eq!(
        call(host, VECTORS, "upsert", vec![episodes(), points]).await,
        Ok(None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_ranks_by_cosine_within_the_filter() {
    let dir = data_dir("search");
    let host = store(&dir, None).await;
    seed(&host).await;
    let q = [1.0, 0.0, 0.0];
    assert_eq!(
        search(&host, &q, vec![], 10, 0).await.unwrap(),
        ["a1", "b1", "a2", "a3"]
    );
    // Session isolation is a filter the service always sets.
    assert_eq!(
        search(&host, &q, vec![equals("session", text("a"))], 10, 0)
            .await
            .unwrap(),
        ["a1", "a2", "a3"]
    );
    assert_eq!(
        search(&host, &q, vec![equals("session", text("b"))], 10, 0)
            .await
            .unwrap(),
        ["b1"]
    );
    assert_eq!(
        search(
            &host,
            &q,
            vec![within("time", Some(150.0), Some(250.0))],
            10,
            0
        )
        .await
        .unwrap(),
        ["b1", "a2"]
    );
    assert_eq!(search(&host, &q, vec![], 2, 1).await.unwrap(), ["b1", "a2"]);

    // A rescoring formula ranks in the same pass: with time weighing most, the latest
    // first; each hit carries its score and its plain cosine similarity.
    let by_time = search_by(
        &host,
        &q,
        vec![],
        10,
        0,
        Some(rescore(0.1, 0.01, (0.0, 0.0, 1.0))),
    )
    .await
    .unwrap();
    assert_eq!(ids(by_time.clone()), ["a3", "a2", "b1", "a1"]);
    let Some(Val::List(hits)) = by_time else {
        panic!("{by_time:?}")
    };
    let (Val::Float64(score), Val::Float32(similarity)) = (
        record_field(&hits[1], "score"),
        record_field(&hits[1], "similarity"),
    ) else {
        panic!("{:?}", hits[1])
    };
    assert!((f64::from(*similarity) - 0.8).abs() < 1e-6);
    assert!((score - (0.1 * 0.8 + 0.01 * 200.0)).abs() < 1e-6);
    // An exponential decay around time 150 favours b1, then a1 and a2 (equally far).
    let near = search_by(
        &host,
        &q,
        vec![],
        2,
        0,
        Some(rescore(0.0, 0.0, (1.0, 150.0, 50.0))),
    )
    .await
    .unwrap();
    assert_eq!(ids(near), ["b1", "a1"]);
    let bad = search_by(
        &host,
        &q,
        vec![],
        2,
        0,
        Some(rescore(0.0, 0.0, (1.0, 150.0, 0.0))),
    )
    .await;
    assert_eq!(bad, Err("validation".to_owned()), "a scale of 0 is refused");
    let count = call(
        &host,
        VECTORS,
        "count",
        vec![episodes(), filter(vec![equals("session", text("a"))])],
    )
    .await;
    assert_eq!(count, Ok(Some(Val::U64(3))));
    let page = call(
        &host,
        VECTORS,
        "scroll",
        vec![
            episodes(),
            filter(vec![]),
            Val::Option(Some(Box::new(s("a2")))),
            Val::U32(2),
            Val::Bool(false),
        ],
    )
    .await;
    assert_eq!(ids(page.unwrap()), ["a3", "b1"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_typed_error_and_changes_nothing() {
    let dir = data_dir("bad");
    let host = store(&dir, None).await;
    seed(&host).await;
    let cases = [
        (
            "upsert",
            vec![episodes(), Val::List(vec![point("x", &[1.0, 0.0], "a", 1)])],
            "validation",
        ),
        (
            "upsert",
            vec![
                episodes(),
                Val::List(vec![point("x", &[f32::NAN, 0.0, 0.0], "a", 1)]),
            ],
            "validation",
        ),
        (
            "upsert",
            vec![
                episodes(),
                Val::List(vec![point("", &[1.0, 0.0, 0.0], "a", 1)]),
            ],
            "validation",
        ),
        (
            "upsert",
            vec![
                Val::Enum("entities".into()),
                Val::List(vec![point("x", &[1.0, 0.0, 0.0], "a", 1)]),
            ],
            "validation",
        ),
        (
            "ensure-collection",
            vec![episodes(), embedder_id(4)],
            "validation",
        ),
        (
            "update-payload",
            vec![
                episodes(),
                Val::List(vec![
                    payload_update("a1", vec![field("session", text("moved"))]),
                    payload_update("nope", vec![]),
                ]),
            ],
            "not-found",
        ),
    ];
    for (function, args, expected) in cases {
        assert_eq!(
            call(&host, VECTORS, function, args).await,
            Err(expected.to_owned()),
            "{function}"
        );
    }
    // A batch with one bad point stores none of it.
    let mixed = Val::List(vec![
        point("ok", &[0.0, 0.0, 1.0], "a", 1),
        point("bad", &[1.0], "a", 1),
    ]);
    assert_eq!(
        call(&host, VECTORS, "upsert", vec![episodes(), mixed]).await,
        Err("validation".into())
    );
    assert_eq!(
        search(&host, &[0.0, 0.0, 1.0], vec![], 10, 0)
            .await
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        search(&host, &[0.0, 0.0, 1.0], vec![], 0, 0).await,
        Err("validation".into())
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_a_restart_and_a_torn_log_tail() {
    let dir = data_dir("restart");
    {
        let host = store(&dir, None).await;
        seed(&host).await;
        let update = vec![
            episodes(),
            Val::List(vec![payload_update(
                "a3",
                vec![field("session", text("moved"))],
            )]),
        ];
        assert_eq!(
            call(&host, VECTORS, "update-payload", update).await,
            Ok(None)
        );
        assert_eq!(
            call(
                &host,
                VECTORS,
                "delete",
                vec![episodes(), Val::List(vec![s("b1"), s("zz")])]
            )
            .await,
            Ok(Some(Val::U32(1)))
        );
    }
    // A crash tore a record while it was being written.
    let log = dir.join("store.wal");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 5, 6]);
    std::fs::write(&log, &bytes).unwrap();

    let host = store(&dir, None).await;
    assert_eq!(
        search(&host, &[1.0, 0.0, 0.0], vec![], 10, 0)
            .await
            .unwrap(),
        ["a1", "a2", "a3"]
    );
    assert_eq!(
        search(
            &host,
            &[1.0, 0.0, 0.0],
            vec![equals("session", text("moved"))],
            10,
            0
        )
        .await
        .unwrap(),
        ["a3"]
    );
    assert_eq!(
        std::fs::metadata(&log).unwrap().len(),
        (bytes.len() - 10) as u64,
        "the torn tail is cut off"
    );
    // And writing goes on.
    let more = Val::List(vec![point("a4", &[0.0, 0.0, 1.0], "a", 400)]);
    assert_eq!(
        call(&host, VECTORS, "upsert", vec![episodes(), more]).await,
        Ok(None)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_traps_mid_call_comes_back_with_its_data() {
    let dir = data_dir("trap");
    let limits = CallLimits {
        memory_bytes: 4 << 20,
        ..CallLimits::default()
    };
    let host = store(&dir, Some(limits)).await;
    seed(&host).await;
    // A batch far beyond the store's memory: the call traps while the batch is handed over.
    let huge: Vec<Val> = (0..20_000)
        .map(|i| point(&format!("h{i}"), &[0.5, 0.5, 0.5], "a", i))
        .collect();
    let error = host
        .invoke(
            Request::new("test.huge"),
            VECTORS,
            "upsert",
            &[episodes(), Val::List(huge)],
        )
        .await
        .unwrap_err();
    assert!(matches!(error, CallError::Trap { .. }), "{error}");
    // A fresh instance replays the log: everything acknowledged is there, nothing else.
    assert_eq!(
        search(&host, &[1.0, 0.0, 0.0], vec![], 10, 0)
            .await
            .unwrap(),
        ["a1", "b1", "a2", "a3"]
    );
    assert_eq!(host.component("embedded").unwrap().instantiations(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn node(id: &str, label: &str, name: &str) -> Val {
    Val::Record(vec![
        ("id".into(), s(id)),
        ("label".into(), Val::Enum(label.into())),
        (
            "properties".into(),
            Val::List(vec![field("name", text(name))]),
        ),
    ])
}

fn edge(source: &str, target: &str, relation: &str, weight: f64) -> Val {
    Val::Record(vec![
        ("source".into(), s(source)),
        ("target".into(), s(target)),
        ("relation".into(), Val::Enum(relation.into())),
        ("weight".into(), Val::Float64(weight)),
        ("properties".into(), Val::List(vec![])),
    ])
}

async fn neighbor_ids(host: &ComponentHost, id: &str, direction: &str) -> Vec<String> {
    let args = vec![
        s(id),
        Val::Enum(direction.into()),
        Val::List(vec![]),
        Val::U32(10),
    ];
    let Some(Val::List(items)) = call(host, GRAPH, "neighbors", args).await.unwrap() else {
        panic!()
    };
    let mut ids: Vec<String> = items
        .iter()
        .map(|n| match record_field(record_field(n, "node"), "id") {
            Val::String(id) => id.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graph_keeps_typed_edges_and_refuses_bad_ones() {
    let dir = data_dir("graph");
    {
        let host = store(&dir, None).await;
        for (id, name) in [("e1", "rust"), ("e2", "wasmtime"), ("e3", "cranelift")] {
            assert_eq!(
                call(&host, GRAPH, "upsert-node", vec![node(id, "entity", name)]).await,
                Ok(None)
            );
        }
        let edges = [
            (edge("e2", "e1", "uses", 0.5), Ok(None)),
            (edge("e3", "e2", "part-of", 0.1), Ok(None)),
            (edge("e1", "e1", "uses", 0.1), Err("validation".into())),
            (edge("e1", "nope", "uses", 0.1), Err("not-found".into())),
            (edge("e1", "e3", "uses", f64::NAN), Err("validation".into())),
        ];
        for (edge, expected) in edges {
            let described = format!("{edge:?}");
            assert_eq!(
                call(&host, GRAPH, "upsert-edge", vec![edge]).await,
                expected,
                "{described}"
            );
        }
    }
    // After a restart, from the log.
    let host = store(&dir, None).await;
    assert_eq!(neighbor_ids(&host, "e2", "both").await, ["e1", "e3"]);
    assert_eq!(neighbor_ids(&host, "e2", "outgoing").await, ["e1"]);
    assert_eq!(neighbor_ids(&host, "e2", "incoming").await, ["e3"]);
    assert_eq!(
        call(&host, GRAPH, "degree", vec![s("e2"), Val::List(vec![])]).await,
        Ok(Some(Val::U32(2)))
    );
    let by_name = vec![
        Val::Enum("entity".into()),
        Val::List(vec![equals("name", text("wasmtime"))]),
        Val::U32(10),
    ];
    let Some(Val::List(found)) = call(&host, GRAPH, "find-nodes", by_name).await.unwrap() else {
        panic!()
    };
    assert_eq!(found.len(), 1);
    assert_eq!(record_field(&found[0], "id"), &s("e2"));
    // Deleting a node takes its edges with it.
    assert_eq!(
        call(&host, GRAPH, "delete-node", vec![s("e2")]).await,
        Ok(Some(Val::Bool(true)))
    );
    assert_eq!(
        call(&host, GRAPH, "degree", vec![s("e1"), Val::List(vec![])]).await,
        Ok(Some(Val::U32(0)))
    );
    assert_eq!(
        call(
            &host,
            GRAPH,
            "count-nodes",
            vec![Val::Enum("entity".into())]
        )
        .await,
        Ok(Some(Val::U64(2)))
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn variant(case: &str, value: Val) -> Val {
    Val::Variant(case.into(), Some(Box::new(value)))
}

fn filter_with(must: Vec<Val>, must_not: Vec<Val>) -> Val {
    Val::Record(vec![
        ("must".into(), Val::List(must)),
        ("must-not".into(), Val::List(must_not)),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_condition_filters_as_documented() {
    let dir = data_dir("conditions");
    let host = store(&dir, None).await;
    call(
        &host,
        VECTORS,
        "ensure-collection",
        vec![episodes(), embedder_id(2)],
    )
    .await
    .unwrap();
    let long = "a long text that is well over sixty-four bytes, so it is kept as it is".repeat(2);
    let payload = |tags: &[&str], flag: bool, score: Val, note: &str| {
        Val::List(vec![
            field(
                "tags",
                variant("texts", Val::List(tags.iter().map(|t| s(t)).collect())),
            ),
            field("flag", variant("flag", Val::Bool(flag))),
            field("score", score),
            field("note", text(note)),
        ])
    };
    let point = |id: &str, payload: Val| {
        Val::Record(vec![
            ("id".into(), s(id)),
            ("vector".into(), floats(&[1.0, 0.0])),
            ("payload".into(), payload),
            ("text".into(), Val::Option(None)),
        ])
    };
    let points = Val::List(vec![
        point("p1", payload(&["red", "blue"], true, int(3), "short")),
        point(
            "p2",
            payload(
                &["green"],
                false,
                variant("number", Val::Float64(3.0)),
                &long,
            ),
        ),
        point(
            "p3",
            payload(&[], true, variant("number", Val::Float64(2.5)), "other"),
        ),
        point("p4", Val::List(vec![])),
    ]);
    call(&host, VECTORS, "upsert", vec![episodes(), points])
        .await
        .unwrap();
    let found = async |must: Vec<Val>, must_not: Vec<Val>| {
        let request = Val::Record(vec![
            ("collection".into(), episodes()),
            ("vector".into(), floats(&[1.0, 0.0])),
            ("text".into(), Val::Option(None)),
            ("filter".into(), filter_with(must, must_not)),
            ("limit".into(), Val::U32(10)),
            ("offset".into(), Val::U32(0)),
            ("rescore".into(), Val::Option(None)),
        ]);
        let mut ids = ids(call(&host, VECTORS, "search", vec![request]).await.unwrap());
        ids.sort();
        ids
    };
    // A text list contains a text; integers and numbers compare as numbers.
    assert_eq!(
        found(vec![equals("tags", text("blue"))], vec![]).await,
        ["p1"]
    );
    assert_eq!(
        found(vec![equals("score", int(3))], vec![]).await,
        ["p1", "p2"]
    );
    assert_eq!(
        found(
            vec![equals("score", variant("number", Val::Float64(3.0)))],
            vec![]
        )
        .await,
        ["p1", "p2"]
    );
    assert_eq!(
        found(
            vec![equals("flag", variant("flag", Val::Bool(true)))],
            vec![]
        )
        .await,
        ["p1", "p3"]
    );
    // Long texts compare in full; a value no point has matches nothing.
    assert_eq!(
        found(vec![equals("note", text(&long))], vec![]).await,
        ["p2"]
    );
    assert_eq!(
        found(vec![equals("note", text("absent"))], vec![]).await,
        Vec::<String>::new()
    );
    let any_of = variant(
        "any-of",
        Val::Tuple(vec![
            s("note"),
            Val::List(vec![text("short"), text("other")]),
        ]),
    );
    assert_eq!(found(vec![any_of], vec![]).await, ["p1", "p3"]);
    assert_eq!(
        found(vec![within("score", Some(2.6), None)], vec![]).await,
        ["p1", "p2"]
    );
    // `missing`, and `must-not`.
    let missing = |name: &str| variant("missing", s(name));
    assert_eq!(found(vec![missing("score")], vec![]).await, ["p4"]);
    assert_eq!(found(vec![missing("never-seen")], vec![]).await.len(), 4);
    assert_eq!(
        found(
            vec![],
            vec![equals("flag", variant("flag", Val::Bool(true)))]
        )
        .await,
        ["p2", "p4"]
    );
    // Updating a field changes what filters see; deleting a point moves another into its
    // place without mixing their fields.
    let update = Val::List(vec![payload_update(
        "p4",
        vec![field("note", text("short"))],
    )]);
    call(&host, VECTORS, "update-payload", vec![episodes(), update])
        .await
        .unwrap();
    assert_eq!(
        found(vec![equals("note", text("short"))], vec![]).await,
        ["p1", "p4"]
    );
    call(
        &host,
        VECTORS,
        "delete",
        vec![episodes(), Val::List(vec![s("p1")])],
    )
    .await
    .unwrap();
    assert_eq!(
        found(vec![equals("note", text("short"))], vec![]).await,
        ["p4"]
    );
    assert_eq!(
        found(vec![equals("tags", text("green"))], vec![]).await,
        ["p2"]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A small deterministic generator for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_is_exact_against_brute_force() {
    // The store ranks in two passes (8-bit codes with an error bound, then full
    // precision): the top k must be exactly what scoring every point would give.
    const DIMENSION: usize = 48;
    let dir = data_dir("exact");
    let host = store(&dir, None).await;
    call(
        &host,
        VECTORS,
        "ensure-collection",
        vec![episodes(), embedder_id(DIMENSION as u32)],
    )
    .await
    .unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Clustered vectors, so many scores are close: the hard case for a bound.
    let centres: Vec<Vec<f64>> = (0..5)
        .map(|_| (0..DIMENSION).map(|_| rng.next() - 0.5).collect())
        .collect();
    let mut stored = Vec::new();
    for batch in 0..6 {
        let mut points = Vec::new();
        for i in 0..500 {
            let id = format!("p{batch:02}{i:04}");
            let centre = &centres[i % centres.len()];
            let vector: Vec<f32> = centre
                .iter()
                .map(|c| (c + 0.1 * (rng.next() - 0.5)) as f32)
                .collect();
            let time = (rng.next() * 1000.0).round() as i64;
            points.push(point(&id, &vector, "s", time));
            stored.push((id, vector, time));
        }
        call(
            &host,
            VECTORS,
            "upsert",
            vec![episodes(), Val::List(points)],
        )
        .await
        .unwrap();
    }
    let cosine = |a: &[f32], b: &[f32]| {
        let dot: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        dot / (norm(a) * norm(b))
    };
    for query_index in 0..12 {
        let query: Vec<f32> = centres[query_index % centres.len()]
            .iter()
            .map(|c| (c + 0.1 * (rng.next() - 0.5)) as f32)
            .collect();
        // Half the queries plain cosine, half a formula mixing in time.
        let formula = (query_index % 2 == 1).then(|| rescore(0.4, 0.0002, (0.25, 500.0, 100.0)));
        let expected_score = |vector: &[f32], time: i64| {
            let c = cosine(vector, &query);
            match formula {
                None => c,
                Some(_) => {
                    0.4 * c.max(0.0)
                        + 0.0002 * time as f64
                        + 0.25 * (-((time as f64 - 500.0).abs()) / 100.0).exp()
                }
            }
        };
        let mut brute: Vec<f64> = stored
            .iter()
            .map(|(_, v, t)| expected_score(v, *t))
            .collect();
        brute.sort_by(|a, b| b.total_cmp(a));
        let found = search_by(&host, &query, vec![], 10, 0, formula.clone())
            .await
            .unwrap();
        let Some(Val::List(hits)) = found else {
            panic!("{found:?}")
        };
        assert_eq!(hits.len(), 10);
        for (rank, hit) in hits.iter().enumerate() {
            let Val::Float64(score) = record_field(hit, "score") else {
                panic!("{hit:?}")
            };
            assert!(
                (score - brute[rank]).abs() < 1e-5,
                "query {query_index} rank {rank}: store {score}, brute force {}",
                brute[rank]
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A search with query text: ids and relevances (the `similarity` field), best first.
async fn search_text(host: &ComponentHost, vector: &[f32], query: &str) -> Vec<(String, f32)> {
    let request = Val::Record(vec![
        ("collection".into(), episodes()),
        ("vector".into(), floats(vector)),
        ("text".into(), Val::Option(Some(Box::new(s(query))))),
        ("filter".into(), filter(vec![])),
        ("limit".into(), Val::U32(10)),
        ("offset".into(), Val::U32(0)),
        ("rescore".into(), Val::Option(None)),
    ]);
    let Some(Val::List(hits)) = call(host, VECTORS, "search", vec![request]).await.unwrap() else {
        panic!("a list of hits")
    };
    hits.iter()
        .map(|hit| {
            let Val::String(id) = record_field(hit, "id") else {
                panic!("id")
            };
            let Val::Float32(similarity) = record_field(hit, "similarity") else {
                panic!("similarity")
            };
            (id.clone(), *similarity)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn words_and_vectors_are_fused_and_the_index_survives_a_restart() {
    let dir = data_dir("lexical");
    let with_text = |id: &str, vector: &[f32], content: &str| {
        Val::Record(vec![
            ("id".into(), s(id)),
            ("vector".into(), floats(vector)),
            ("payload".into(), Val::List(vec![])),
            ("text".into(), Val::Option(Some(Box::new(s(content))))),
        ])
    };
    let query = [1.0, 0.0, 0.0];
    {
        let host = store(&dir, None).await;
        call(
            &host,
            VECTORS,
            "ensure-collection",
            vec![episodes(), embedder_id(3)],
        )
        .await
        .unwrap();
        let points = Val::List(vec![
            // Nearest by vector, no word of the query.
            with_text("near", &[1.0, 0.1, 0.0], "lunch: a sandwich"),
            // Farther by vector, but it names what the query asks for, twice over.
            with_text(
                "named",
                &[0.8, 0.6, 0.0],
                "Zanzibar-7 deploy of release 2.4.1",
            ),
            with_text(
                "named-too",
                &[0.8, 0.6, 0.0],
                "Zanzibar-7 deploy of release 2.4.1",
            ),
            with_text("far", &[0.0, 0.0, 1.0], "nothing in common"),
            // No text: found by its vector alone.
            point("untexted", &[0.9, 0.2, 0.0], "s", 0),
        ]);
        call(&host, VECTORS, "upsert", vec![episodes(), points])
            .await
            .unwrap();
        let hits = search_text(&host, &query, "when was zanzibar-7 release 2.4.1 deployed?").await;
        let first: Vec<&str> = hits[..2].iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(first, ["named", "named-too"], "{hits:?}");
        // Identical texts and vectors: equally relevant, whatever their ids.
        assert_eq!(hits[0].1, hits[1].1, "{hits:?}");
        assert!(
            hits.iter().all(|(_, r)| (0.0..=1.0).contains(r)),
            "{hits:?}"
        );
        // Without text, the vector ranking alone: the nearest first.
        assert_eq!(search(&host, &query, vec![], 1, 0).await.unwrap(), ["near"]);
    }
    // A new instance replays the log: the words are indexed again.
    let host = store(&dir, None).await;
    let hits = search_text(&host, &query, "zanzibar-7").await;
    assert_eq!(hits[0].0, "named", "{hits:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

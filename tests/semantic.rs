//! Semantic memory through the host API, on the real default components.

use serde_json::json;
use ww_host::memory::{
    CreateEntity, CreateEpisode, CreateRelation, EntityType, ErrorCode, GetProvenance, Memory,
    MemoryError, MemoryStatsArgs, RelationType, SemanticRecall, SpreadActivation, SupersedeFact,
    arguments,
};
use ww_host::plugins::Request;
use ww_tests::{data_dir, memory, telemetry};

const SESSION: &str = "semantic-tests";

fn request(name: &str) -> Request {
    Request::new(format!("test.{name}"))
}

async fn open(name: &str) -> Memory {
    memory(&data_dir(name), telemetry(&[])).await
}

async fn entity(memory: &Memory, name: &str, kind: EntityType, summary: &str) -> String {
    memory
        .create_entity(
            request("create_entity"),
            SESSION,
            CreateEntity {
                name: name.to_owned(),
                entity_type: kind,
                summary: summary.to_owned(),
                details: None,
                source: None,
            },
        )
        .await
        .expect("create_entity")
        .entity
        .id
}

async fn relate(
    memory: &Memory,
    source: &str,
    target: &str,
    kind: RelationType,
    weight: f64,
) -> Result<(), MemoryError> {
    memory
        .create_relation(
            request("create_relation"),
            CreateRelation {
                source_id: source.to_owned(),
                target_id: target.to_owned(),
                relation_type: kind,
                weight: Some(weight),
            },
        )
        .await
        .map(|_| ())
}

async fn spread(memory: &Memory, seed: &str, steps: u32, retention: f64) -> Vec<(String, f64)> {
    memory
        .spread_activation(
            request("spread"),
            SpreadActivation {
                seed_entities: vec![seed.to_owned()],
                steps: Some(steps),
                retention: Some(retention),
                ..Default::default()
            },
        )
        .await
        .expect("spread_activation")
        .activations
        .into_iter()
        .map(|a| (a.entity_id, a.activation))
        .collect()
}

fn value(activations: &[(String, f64)], id: &str) -> f64 {
    activations
        .iter()
        .find(|(e, _)| e == id)
        .map_or(0.0, |(_, a)| *a)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[tokio::test(flavor = "multi_thread")]
async fn spreading_activation_follows_the_step_formula() {
    let memory = open("semantic-spread").await;
    let a = entity(&memory, "alpha", EntityType::Concept, "first").await;
    let b = entity(&memory, "beta", EntityType::Concept, "second").await;
    let c = entity(&memory, "gamma", EntityType::Concept, "third").await;
    let d = entity(&memory, "delta", EntityType::Concept, "alone").await;
    relate(&memory, &a, &b, RelationType::Uses, 0.5)
        .await
        .unwrap();
    relate(&memory, &a, &c, RelationType::PartOf, 0.3)
        .await
        .unwrap();
    relate(&memory, &c, &b, RelationType::SimilarTo, 0.2)
        .await
        .unwrap();

    // Step 1 (f = 0.9): a keeps 0.5·0.9; b and c get 0.5·0.9·w/Σw with Σw = 0.8.
    let one = spread(&memory, &a, 1, 0.5).await;
    assert!(close(value(&one, &a), 0.45), "{one:?}");
    assert!(close(value(&one, &b), 0.45 * 0.5 / 0.8), "{one:?}");
    assert!(close(value(&one, &c), 0.45 * 0.3 / 0.8), "{one:?}");
    assert_eq!(value(&one, &d), 0.0, "no edge, no activation");

    // Step 2 (f = 0.8), every node spreading over its own edges.
    let (a1, b1, c1) = (0.45, 0.28125, 0.16875);
    let f = 0.8;
    let expected_a = a1 * 0.5 * f + b1 * 0.5 * f * 0.5 / 0.7 + c1 * 0.5 * f * 0.3 / 0.5;
    let expected_b = b1 * 0.5 * f + a1 * 0.5 * f * 0.5 / 0.8 + c1 * 0.5 * f * 0.2 / 0.5;
    let expected_c = c1 * 0.5 * f + a1 * 0.5 * f * 0.3 / 0.8 + b1 * 0.5 * f * 0.2 / 0.7;
    let two = spread(&memory, &a, 2, 0.5).await;
    assert!(
        close(value(&two, &a), expected_a),
        "{two:?} vs {expected_a}"
    );
    assert!(
        close(value(&two, &b), expected_b),
        "{two:?} vs {expected_b}"
    );
    assert!(
        close(value(&two, &c), expected_c),
        "{two:?} vs {expected_c}"
    );
    assert_eq!(two[0].0, a, "sorted highest first");

    // max_nodes keeps the highest and says it cut.
    let cut = memory
        .spread_activation(
            request("spread"),
            SpreadActivation {
                seed_entities: vec![a.clone()],
                max_nodes: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(cut.truncated);
    assert_eq!(cut.activations.len(), 2);
    // Read-only: the same question gives the same answer.
    assert_eq!(spread(&memory, &a, 2, 0.5).await, two);
}

#[tokio::test(flavor = "multi_thread")]
async fn recall_scores_by_the_formula_and_strengthens_co_retrieved_edges() {
    let memory = open("semantic-recall").await;
    let x = entity(
        &memory,
        "kubernetes cluster",
        EntityType::Tool,
        "kubernetes cluster upgrades",
    )
    .await;
    let y = entity(
        &memory,
        "kubernetes nodes",
        EntityType::Tool,
        "kubernetes node pools upgrades",
    )
    .await;
    let z = entity(
        &memory,
        "sourdough",
        EntityType::Concept,
        "bread baking with a starter",
    )
    .await;
    relate(&memory, &x, &y, RelationType::SimilarTo, 0.1)
        .await
        .unwrap();
    relate(&memory, &x, &z, RelationType::Uses, 0.1)
        .await
        .unwrap();
    let before = spread(&memory, &x, 1, 0.0).await;
    assert!(close(value(&before, &y), value(&before, &z)));

    let found = memory
        .semantic_recall(
            request("recall"),
            SemanticRecall {
                query: "kubernetes upgrades".to_owned(),
                context_entities: vec![],
                limit: Some(2),
            },
        )
        .await
        .expect("semantic_recall");
    let mut ids: Vec<&str> = found
        .entities
        .iter()
        .map(|e| e.entity.id.as_str())
        .collect();
    ids.sort();
    let mut want = vec![x.as_str(), y.as_str()];
    want.sort();
    assert_eq!(ids, want);
    for hit in &found.entities {
        // Never used and created within the minute: A = ln 1 − 0.5·ln(1/60), R = 1.
        let s = hit.score;
        assert!(close(s.activation, 0.5 * 60f64.ln()), "{s:?}");
        assert!((s.retrievability - 1.0).abs() < 1e-6, "{s:?}");
        let sigmoid = 1.0 / (1.0 + (-s.activation).exp());
        assert!(close(
            s.total,
            0.4 * s.similarity + 0.35 * sigmoid + 0.25 * s.retrievability
        ));
        assert_eq!(hit.entity.access_count, 1);
    }
    // x—y were retrieved together: w ← 0.1 + 0.1·(1 − 0.1) = 0.19; x—z was not.
    let after = spread(&memory, &x, 1, 0.0).await;
    assert!(close(value(&after, &y), 0.9 * 0.19 / 0.29), "{after:?}");
    assert!(close(value(&after, &z), 0.9 * 0.1 / 0.29), "{after:?}");

    // A context entity lifts its neighbours: + (1/|C|)·w·(1.6 − ln fan), here fan(z) = 1.
    let with_context = memory
        .semantic_recall(
            request("recall"),
            SemanticRecall {
                query: "bread".to_owned(),
                context_entities: vec![z.clone()],
                limit: Some(3),
            },
        )
        .await
        .expect("semantic_recall");
    let xs = with_context
        .entities
        .iter()
        .find(|e| e.entity.id == x)
        .expect("x is z's neighbour, so a candidate");
    // x was used once, just now (h < 1 minute).
    let base = 0.5 * 60f64.ln();
    assert!(
        close(xs.score.activation, base + 0.1 * 1.6),
        "{:?}",
        xs.score
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn supersession_replaces_a_fact_and_provenance_shows_both() {
    let memory = open("semantic-supersede").await;
    let episode = memory
        .create_episode(
            request("episode"),
            SESSION,
            CreateEpisode {
                content: "we moved production to kubernetes 1.28".to_owned(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let old = memory
        .create_entity(
            request("create_entity"),
            SESSION,
            CreateEntity {
                name: "production platform".to_owned(),
                entity_type: EntityType::Fact,
                summary: "production runs on kubernetes 1.28".to_owned(),
                details: None,
                source: Some(episode.id.clone()),
            },
        )
        .await
        .unwrap()
        .entity
        .id;
    let team = entity(
        &memory,
        "platform team",
        EntityType::Person,
        "runs production",
    )
    .await;
    relate(&memory, &team, &old, RelationType::Uses, 0.4)
        .await
        .unwrap();

    let change = memory
        .supersede_fact(
            request("supersede"),
            SESSION,
            SupersedeFact {
                entity_id: old.clone(),
                new_summary: "production runs on kubernetes 1.31".to_owned(),
                new_details: None,
                valid_from: None,
                reason: Some("upgrade".to_owned()),
            },
        )
        .await
        .expect("supersede_fact");
    let new = change.new.id.clone();
    assert_eq!(change.relations_carried, 1);
    assert_eq!(change.old.superseded_by.as_deref(), Some(new.as_str()));
    assert_eq!(
        change.old.valid_to.as_deref(),
        Some(change.new.valid_from.as_str())
    );

    // Recall sees only the current version.
    let found = memory
        .semantic_recall(
            request("recall"),
            SemanticRecall {
                query: "production kubernetes".to_owned(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ids: Vec<&str> = found
        .entities
        .iter()
        .map(|e| e.entity.id.as_str())
        .collect();
    assert!(
        ids.contains(&new.as_str()) && !ids.contains(&old.as_str()),
        "{ids:?}"
    );
    // The relation moved to the new version.
    assert!(value(&spread(&memory, &team, 1, 0.0).await, &new) > 0.0);

    let newer = memory
        .get_provenance(
            request("provenance"),
            GetProvenance {
                entity_id: new.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(newer.supersedes, vec![old.clone()]);
    assert!(newer.superseded_by.is_empty());
    let older = memory
        .get_provenance(
            request("provenance"),
            GetProvenance {
                entity_id: old.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(older.superseded_by, vec![new.clone()]);
    assert_eq!(older.source_episodes, vec![episode.id.clone()]);

    // Superseding the old version again names its successor.
    let again = memory
        .supersede_fact(
            request("supersede"),
            SESSION,
            SupersedeFact {
                entity_id: old.clone(),
                new_summary: "something else".to_owned(),
                new_details: None,
                valid_from: None,
                reason: None,
            },
        )
        .await
        .expect_err("already superseded");
    assert_eq!(again.code, ErrorCode::ValidationError);
    assert!(again.message.contains(&new), "{again:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn entities_are_not_duplicated_and_bad_input_is_refused_cleanly() {
    let memory = open("semantic-bad").await;
    let a = entity(&memory, "Rust", EntityType::Tool, "a language").await;
    let same = memory
        .create_entity(
            request("create_entity"),
            SESSION,
            CreateEntity {
                name: "  rust ".to_owned(),
                entity_type: EntityType::Tool,
                summary: "again".to_owned(),
                details: None,
                source: None,
            },
        )
        .await
        .unwrap();
    assert!(!same.created);
    assert_eq!(same.entity.id, a);
    let other_type = entity(&memory, "Rust", EntityType::Concept, "oxidation").await;
    assert_ne!(other_type, a);
    let b = entity(&memory, "cargo", EntityType::Tool, "its build tool").await;
    let hostile = entity(
        &memory,
        "x'}) MATCH (n) DETACH DELETE n //",
        EntityType::Concept,
        "`; DROP TABLE entities; --",
    )
    .await;
    let count = |m: &Memory| {
        let m = m.clone();
        async move {
            m.memory_stats(request("stats"), MemoryStatsArgs::default())
                .await
                .unwrap()
                .counts
        }
    };
    let before = count(&memory).await;
    assert_eq!(before.entities, 4);

    let cases: Vec<(Result<(), MemoryError>, ErrorCode, &str)> = vec![
        (
            relate(&memory, &a, &a, RelationType::Uses, 0.5).await,
            ErrorCode::ValidationError,
            "target_id",
        ),
        (
            relate(&memory, &a, "nope", RelationType::Uses, 0.5).await,
            ErrorCode::NotFound,
            "",
        ),
        (
            relate(&memory, &a, &b, RelationType::Uses, f64::NAN).await,
            ErrorCode::ValidationError,
            "weight",
        ),
        (
            relate(&memory, &a, &b, RelationType::Uses, 1.5).await,
            ErrorCode::ValidationError,
            "weight",
        ),
        (
            relate(&memory, &a, &b, RelationType::PartOf, 0.5).await,
            ErrorCode::ValidationError,
            "OK",
        ),
    ];
    for (i, (result, code, field)) in cases.into_iter().enumerate() {
        if field == "OK" {
            result.expect("a valid relation");
            continue;
        }
        let error = result.expect_err("refused");
        assert_eq!(error.code, code, "case {i}: {error:?}");
        if !field.is_empty() {
            assert_eq!(error.field.as_deref(), Some(field), "case {i}");
        }
    }
    // a PART_OF b, b PART_OF hostile, hostile PART_OF a would be a cycle.
    relate(&memory, &b, &hostile, RelationType::PartOf, 0.5)
        .await
        .unwrap();
    let cycle = relate(&memory, &hostile, &a, RelationType::PartOf, 0.5)
        .await
        .unwrap_err();
    assert_eq!(cycle.code, ErrorCode::ValidationError, "{cycle:?}");
    assert!(cycle.message.contains("cycle"));
    // The same direction with a type that may loop is fine.
    relate(&memory, &hostile, &a, RelationType::SimilarTo, 0.5)
        .await
        .unwrap();

    let unknown_type = arguments::<CreateRelation>(json!({
        "source_id": a, "target_id": b, "relation_type": "LOVES"
    }));
    assert_eq!(
        unknown_type.unwrap_err().field.as_deref(),
        Some("relation_type")
    );
    let bad_source = memory
        .create_entity(
            request("create_entity"),
            SESSION,
            CreateEntity {
                name: "orphan".to_owned(),
                entity_type: EntityType::Concept,
                summary: "from nowhere".to_owned(),
                details: None,
                source: Some("no-such-episode".to_owned()),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(bad_source.code, ErrorCode::NotFound);
    for (field, name, summary) in [
        ("name", "", "x"),
        ("summary", "y", ""),
        ("name", &*"n".repeat(1 << 20), "x"),
    ] {
        let error = memory
            .create_entity(
                request("create_entity"),
                SESSION,
                CreateEntity {
                    name: name.to_owned(),
                    entity_type: EntityType::Concept,
                    summary: summary.to_owned(),
                    details: None,
                    source: None,
                },
            )
            .await
            .unwrap_err();
        assert_eq!(error.field.as_deref(), Some(field), "{error:?}");
    }
    let spread_errors = [
        (
            SpreadActivation {
                seed_entities: vec![],
                ..Default::default()
            },
            "seed_entities",
        ),
        (
            SpreadActivation {
                seed_entities: vec![a.clone()],
                steps: Some(0),
                ..Default::default()
            },
            "steps",
        ),
        (
            SpreadActivation {
                seed_entities: vec![a.clone()],
                decay: Some(f64::NAN),
                ..Default::default()
            },
            "decay",
        ),
        (
            SpreadActivation {
                seed_entities: vec![a.clone()],
                threshold: Some(0.0),
                ..Default::default()
            },
            "threshold",
        ),
    ];
    for (input, field) in spread_errors {
        let error = memory
            .spread_activation(request("spread"), input)
            .await
            .unwrap_err();
        assert_eq!(error.field.as_deref(), Some(field), "{error:?}");
    }
    let missing = memory
        .get_provenance(
            request("provenance"),
            GetProvenance {
                entity_id: "nope".to_owned(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(missing.code, ErrorCode::NotFound);

    // Nothing refused was stored; the hostile name is just a name.
    let after = count(&memory).await;
    assert_eq!(after.entities, before.entities);
    let found = memory
        .get_provenance(
            request("provenance"),
            GetProvenance {
                entity_id: hostile.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(found.entity.name, "x'}) MATCH (n) DETACH DELETE n //");
}

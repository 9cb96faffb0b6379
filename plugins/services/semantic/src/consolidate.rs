//! Deep consolidation (tool 14): clusters of similar episodes (cosine ≥ 0.75 to
//! the cluster's first episode, at least 3 of them) become entities — or update the
//! active entity of the same name — linked to each episode as their consolidation origin.
//!
//! It reads the episodes the episodic service stored (its `content`, `session` and
//! `duplicate_of` payload fields); near-duplicates marked by light consolidation are left
//! out.

use std::collections::{BTreeMap, HashSet};

use ww_guest::semantic::{DeepReport, EntityType};
use ww_guest::services::graph_store::{self as graph, Direction};
use ww_guest::services::vector_store::{self as vectors, Collection, PayloadUpdate};
use ww_guest::services::{Condition, Error, Filter};
use ww_guest::{add_span_attribute, add_span_link, cancelled, kv, report_progress, traced};
use ww_service_common::{Fields, Quantized, similar_at_least};

use crate::entity;

const SIMILARITY: f32 = 0.75;
const MIN_CLUSTER: usize = 3;
const PAGE: u32 = 1_000;
const SUMMARY_CHARS: usize = 500;
/// Words that say nothing about what a cluster is about.
const STOPWORDS: [&str; 24] = [
    "about", "after", "again", "also", "been", "before", "from", "have", "into", "just", "more",
    "much", "only", "over", "some", "than", "that", "their", "them", "then", "there", "this",
    "when", "with",
];

struct Episode {
    id: String,
    session: String,
    content: String,
    vector: Vec<f32>,
    quantized: Quantized,
    /// The span that stored it (episodic's `created_trace` / `created_span`).
    written_by: Option<(String, String)>,
}

/// Links on one span, at most (the host's per-span limit).
const MAX_LINKS: usize = 128;

/// A cluster's name: its three most frequent words of four letters or more.
fn cluster_name(members: &[&Episode]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for episode in members {
        let words: HashSet<String> = episode
            .content
            .split(|c: char| !c.is_alphanumeric())
            .map(str::to_lowercase)
            .filter(|w| w.chars().count() >= 4 && !STOPWORDS.contains(&w.as_str()))
            .collect();
        for word in words {
            *counts.entry(word).or_default() += 1;
        }
    }
    let mut ranked: Vec<(String, usize)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let name: Vec<String> = ranked.into_iter().take(3).map(|(w, _)| w).collect();
    if name.is_empty() {
        "unnamed cluster".to_owned()
    } else {
        name.join(" ")
    }
}

fn read_episodes() -> Result<Vec<Episode>, Error> {
    let filter = Filter {
        must: vec![Condition::Missing("duplicate_of".to_owned())],
        must_not: vec![],
    };
    let total = vectors::count(Collection::Episodes, &filter)?;
    let mut episodes = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = vectors::scroll(Collection::Episodes, &filter, after.as_deref(), PAGE, true)?;
        let Some(last) = page.last().map(|p| p.id.clone()) else {
            break;
        };
        for point in page {
            let fields = Fields(&point.payload);
            let vector = point.vector.unwrap_or_default();
            episodes.push(Episode {
                session: fields.required_text("session")?,
                content: fields.required_text("content")?,
                quantized: Quantized::new(&vector),
                vector,
                written_by: fields.trace("created"),
                id: point.id,
            });
        }
        report_progress(episodes.len() as u64, total * 2, "reading episodes");
        if cancelled() {
            break;
        }
        after = Some(last);
    }
    Ok(episodes)
}

/// The report of a deep consolidation that stopped at a step because its request was
/// cancelled (the flag stays set once set, so each step's check sees it).
fn stopped(report: DeepReport) -> DeepReport {
    add_span_attribute("consolidation.episodes", report.episodes_examined);
    add_span_attribute("consolidation.entities_created", report.entities_created);
    add_span_attribute("consolidation.entities_updated", report.entities_updated);
    add_span_attribute("consolidation.cancelled", true);
    report
}

#[traced("semantic.consolidate_deep", kind = Internal)]
pub fn deep(now: i64) -> Result<DeepReport, Error> {
    let episodes = read_episodes()?;
    let total = episodes.len() as u64;
    let mut report = DeepReport {
        episodes_examined: total,
        clusters: 0,
        entities_created: 0,
        entities_updated: 0,
    };
    if cancelled() {
        // Clusters of part of the episodes are not the clusters: nothing is written.
        return Ok(stopped(report));
    }
    // Leader clustering, in id (creation) order: each episode joins the first cluster
    // whose first episode it is similar enough to, or starts one.
    let mut clusters: Vec<Vec<usize>> = Vec::new();
    for (index, episode) in episodes.iter().enumerate() {
        let similar = |leader: &Episode| {
            similar_at_least(
                &leader.quantized,
                &leader.vector,
                &episode.quantized,
                &episode.vector,
                SIMILARITY,
            )
        };
        let leads = |c: &&mut Vec<usize>| {
            c.first()
                .and_then(|&i| episodes.get(i))
                .is_some_and(similar)
        };
        match clusters.iter_mut().find(leads) {
            Some(cluster) => cluster.push(index),
            None => clusters.push(vec![index]),
        }
        if index % 500 == 499 {
            report_progress(total + index as u64 + 1, total * 2, "clustering episodes");
            if cancelled() {
                return Ok(stopped(report));
            }
        }
    }
    let big: Vec<Vec<&Episode>> = clusters
        .iter()
        .filter(|c| c.len() >= MIN_CLUSTER)
        .map(|c| c.iter().filter_map(|&i| episodes.get(i)).collect())
        .collect();
    report.clusters = big.len() as u64;
    // The consolidation's span links to the spans that wrote the episodes it builds
    // entities from: from an entity's origin to the requests behind it.
    let mut links = 0;
    for episode in big.iter().flatten() {
        if let Some((trace_id, span_id)) = &episode.written_by
            && links < MAX_LINKS
        {
            add_span_link(
                trace_id,
                span_id,
                vec![kv("ww.memory.id", episode.id.clone())],
            );
            links += 1;
        }
    }
    let writer = entity::writer();
    for members in &big {
        let Some(&leader) = members.first() else {
            continue;
        };
        if cancelled() {
            // Each cluster is written whole or not at all; the next run does the rest.
            return Ok(stopped(report));
        }
        let name = cluster_name(members);
        let existing = crate::find_active(&name, entity::type_name(EntityType::Concept))?;
        let id = match existing {
            Some(id) => {
                if writer.is_some() {
                    vectors::update_payload(
                        Collection::Entities,
                        &[PayloadUpdate {
                            id: id.clone(),
                            fields: entity::trace_fields(entity::UPDATED_BY, writer.as_ref()),
                        }],
                    )?;
                }
                report.entities_updated += 1;
                id
            }
            None => {
                let summary: String = leader.content.chars().take(SUMMARY_CHARS).collect();
                let entity = entity::fresh(
                    name.clone(),
                    EntityType::Concept,
                    format!("{summary} (consolidated from {} episodes)", members.len()),
                    None,
                    leader.session.clone(),
                    now,
                    now,
                );
                crate::store_new(&entity)?;
                report.entities_created += 1;
                entity.id
            }
        };
        let linked: HashSet<String> = graph::neighbors(
            &id,
            Direction::Outgoing,
            &[graph::RelationType::DerivedFrom],
            10_000,
        )?
        .into_iter()
        .map(|n| n.node.id)
        .collect();
        for episode in members {
            if !linked.contains(&episode.id) {
                crate::link_episode(&id, &episode.id, "consolidation")?;
            }
        }
    }
    report_progress(total * 2, total * 2, "entities written");
    add_span_attribute("consolidation.episodes", total);
    add_span_attribute("consolidation.clusters", big.len());
    add_span_attribute("consolidation.entities_created", report.entities_created);
    add_span_attribute("consolidation.entities_updated", report.entities_updated);
    Ok(report)
}

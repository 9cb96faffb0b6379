//! The formulas of `recall_episodes` and `query_at_time` in one place: the store ranks with the same
//! terms (as a rescoring formula) and the service reports each part.

use ww_guest::episodic::{EpisodeScore, Outcome};
use ww_guest::services::vector_store::{ExpDecay, Rescore, ScoreTerm};

pub const W_SIMILARITY: f64 = 0.40;
pub const W_RECENCY: f64 = 0.25;
pub const W_OUTCOME: f64 = 0.20;
pub const W_VALENCE: f64 = 0.15;
/// Recency is e^(−0.1·age in days).
pub const DECAY_PER_DAY: f64 = 0.1;
pub const DAY_MS: f64 = 86_400_000.0;
/// Stability after a recall: S ← S + REINFORCEMENT·(STABILITY_CEILING − S).
pub const REINFORCEMENT: f64 = 0.1;
pub const STABILITY_CEILING: f64 = 2.0;
/// A new episode's stability.
pub const INITIAL_STABILITY: f64 = 1.0;

pub fn outcome_weight(outcome: Outcome) -> f64 {
    match outcome {
        Outcome::Success => 1.0,
        Outcome::Partial => 0.5,
        Outcome::Neutral => 0.3,
        Outcome::Failure => 0.1,
    }
}

/// e^(−0.1·|days between `event` and `reference`|).
pub fn recency(event: i64, reference: i64) -> f64 {
    (-DECAY_PER_DAY * ((reference - event) as f64).abs() / DAY_MS).exp()
}

/// Cosine similarity clamped to [0, 1].
pub fn similarity(cosine: f32) -> f64 {
    f64::from(cosine).clamp(0.0, 1.0)
}

/// An exponential decay over the event time, as the store's rescoring term.
fn recency_term(weight: f64, reference: i64) -> ScoreTerm {
    ScoreTerm::ExpDecay(ExpDecay {
        field: crate::episode::EVENT_TIME.to_owned(),
        origin: reference as f64,
        scale: DAY_MS / DECAY_PER_DAY,
        weight,
    })
}

/// `recall_episodes`: 0.40·similarity + 0.25·recency + 0.20·outcome + 0.15·valence.
pub fn recall_formula(now: i64) -> Rescore {
    Rescore {
        similarity_weight: W_SIMILARITY,
        terms: vec![
            recency_term(W_RECENCY, now),
            ScoreTerm::Linear((crate::episode::OUTCOME_WEIGHT.to_owned(), W_OUTCOME)),
            ScoreTerm::Linear((crate::episode::VALENCE.to_owned(), W_VALENCE)),
        ],
    }
}

pub fn recall_score(
    cosine: f32,
    event: i64,
    now: i64,
    outcome: Outcome,
    valence: f64,
) -> EpisodeScore {
    let similarity = similarity(cosine);
    let recency = recency(event, now);
    let outcome = outcome_weight(outcome);
    EpisodeScore {
        similarity,
        recency,
        outcome,
        valence,
        total: W_SIMILARITY * similarity
            + W_RECENCY * recency
            + W_OUTCOME * outcome
            + W_VALENCE * valence,
    }
}

/// `query_at_time`: (1 − w)·similarity + w·recency measured from the point in time.
pub fn point_in_time_formula(at: i64, recency_weight: f64) -> Rescore {
    Rescore {
        similarity_weight: 1.0 - recency_weight,
        terms: vec![recency_term(recency_weight, at)],
    }
}

pub fn point_in_time_score(
    cosine: f32,
    event: i64,
    at: i64,
    recency_weight: f64,
    outcome: Outcome,
    valence: f64,
) -> EpisodeScore {
    let similarity = similarity(cosine);
    let recency = recency(event, at);
    EpisodeScore {
        similarity,
        recency,
        outcome: outcome_weight(outcome),
        valence,
        total: (1.0 - recency_weight) * similarity + recency_weight * recency,
    }
}

/// S ← S + 0.1·(2 − S).
pub fn reinforce(stability: f64) -> f64 {
    stability + REINFORCEMENT * (STABILITY_CEILING - stability)
}

/// [`reinforce`] as the store applies it: S ← S·scale + offset.
pub const REINFORCEMENT_AFFINE: (f64, f64) =
    (1.0 - REINFORCEMENT, REINFORCEMENT * STABILITY_CEILING);

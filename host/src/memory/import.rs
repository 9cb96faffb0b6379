//! `ww-memory import FILE`: episodes from a JSON Lines file (one `create_episode`
//! argument object a line), stored in batches through `create_episodes`.
//!
//! Safe to interrupt and run again: every episode has an id, the file's (`"id"`, a UUID)
//! or one derived from the session, the line's number and its text, so a second run finds
//! the episodes the first one stored and stores nothing twice.

use sha2::{Digest, Sha256};

use super::{CreateEpisode, MemoryError, arguments};

/// One line of the file that holds an episode.
#[derive(Debug, Clone)]
pub struct ImportLine {
    /// Its number in the file, from 1.
    pub number: usize,
    /// The episode, with its id.
    pub episode: CreateEpisode,
}

/// A line that is not an episode.
#[derive(Debug, thiserror::Error)]
#[error("line {number}: {message}")]
pub struct ImportError {
    /// Its number, from 1.
    pub number: usize,
    /// What is wrong with it.
    pub message: String,
}

/// Every episode of `text` (a JSON Lines file; blank lines are skipped), each with its
/// id; the first line that is not a valid `create_episode` argument object stops it.
pub fn parse_lines(session: &str, text: &str) -> Result<Vec<ImportLine>, ImportError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            let number = index + 1;
            let error = |e: MemoryError| ImportError {
                number,
                message: match e.field {
                    Some(field) => format!("{field}: {}", e.message),
                    None => e.message,
                },
            };
            let value: serde_json::Value = serde_json::from_str(line).map_err(|e| ImportError {
                number,
                message: format!("not JSON: {e}"),
            })?;
            let mut episode: CreateEpisode = arguments(value).map_err(error)?;
            episode
                .id
                .get_or_insert_with(|| derived_id(session, number, line));
            Ok(ImportLine { number, episode })
        })
        .collect()
}

/// The id of line `number`, `line`, of a file imported into `session` when the line
/// gives none: a UUID (version 8, "custom") from their SHA-256, the same on every run.
pub fn derived_id(session: &str, number: usize, line: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(session.as_bytes());
    hash.update([0]);
    hash.update(number.to_le_bytes());
    hash.update(line.as_bytes());
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    // The digest's first 16 of its 32 bytes.
    bytes
        .iter_mut()
        .zip(digest.iter())
        .for_each(|(b, d)| *b = *d);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_episodes_with_stable_ids_and_bad_lines_are_named() {
        let file = "{\"content\": \"a\"}\n\n{\"content\": \"b\", \"id\": \"0190f1c4-7f1e-7d3a-9a4b-0c1d2e3f4a5b\"}\n";
        let lines = parse_lines("s", file).expect("valid");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].number, 1);
        assert_eq!(lines[1].number, 3);
        let first = lines[0].episode.id.clone().expect("derived");
        assert!(uuid::Uuid::parse_str(&first).is_ok());
        assert_eq!(
            parse_lines("s", file).expect("valid")[0].episode.id,
            Some(first.clone())
        );
        assert_ne!(
            parse_lines("t", file).expect("valid")[0].episode.id,
            Some(first)
        );
        assert_eq!(
            lines[1].episode.id.as_deref(),
            Some("0190f1c4-7f1e-7d3a-9a4b-0c1d2e3f4a5b")
        );
        let error = parse_lines("s", "{\"content\": \"a\"}\n{\"contents\": 1}\n").expect_err("bad");
        assert_eq!(error.number, 2);
        let error = parse_lines("s", "not json\n").expect_err("bad");
        assert!(error.to_string().starts_with("line 1: not JSON"), "{error}");
    }
}

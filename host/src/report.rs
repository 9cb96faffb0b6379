//! An error as one line of text, with every source it carries: what a log line or a
//! listing shows when no `anyhow` formatting is at hand.

/// `error` and its sources, joined by `: ` (as `anyhow` prints `{:#}`).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_source_is_on_the_line() {
        let io = std::io::Error::other("refused");
        let error = crate::plugins::network::ReachError::Connect {
            addr: "127.0.0.1:7".parse().unwrap(),
            source: io,
        };
        assert_eq!(super::chain(&error), "127.0.0.1:7: refused");
    }
}

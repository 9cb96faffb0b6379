//! How a component asks its exports to be run: the `ww-memory:calls` custom section the
//! guest SDK's `calls!` macro writes (a line per export, `<property> <function>`), read
//! from the component file at load, before anything is instantiated.

use std::collections::BTreeSet;

/// The section's name.
pub const SECTION: &str = "ww-memory:calls";

/// What a component stated about its exports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallProperties {
    /// Exports whose calls never run at once and always run on the same instance (it
    /// may remember between them what they alone change: episodic's session heads).
    pub serial: BTreeSet<String>,
    /// Exports that may run long (consolidations): each call on an instance of its own,
    /// under the long deadline, dropped afterwards.
    pub long_running: BTreeSet<String>,
    /// Lines not understood (an unknown property, from a newer SDK, or no function):
    /// reported by `ww-memory plugins`, otherwise ignored.
    pub unknown: Vec<String>,
}

impl CallProperties {
    /// Whether `function` is one of the serial exports.
    pub fn is_serial(&self, function: &str) -> bool {
        self.serial.contains(function)
    }

    /// Whether `function` is one of the long-running exports.
    pub fn is_long_running(&self, function: &str) -> bool {
        self.long_running.contains(function)
    }

    /// Read the properties from a component's bytes: every `ww-memory:calls` section,
    /// in the component or in its core modules (where the SDK's static lands). A file
    /// wasmparser cannot read yields what was read before the fault; compiling it
    /// reports the fault properly.
    pub fn of_component(bytes: &[u8]) -> Self {
        let mut properties = Self::default();
        for payload in wasmparser::Parser::new(0).parse_all(bytes) {
            match payload {
                Ok(wasmparser::Payload::CustomSection(section)) if section.name() == SECTION => {
                    properties.add(&String::from_utf8_lossy(section.data()));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        properties
    }

    fn add(&mut self, text: &str) {
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            match line.split_once(' ') {
                Some(("serial", function)) => {
                    self.serial.insert(function.trim().to_owned());
                }
                Some(("long_running", function)) => {
                    self.long_running.insert(function.trim().to_owned());
                }
                _ => self.unknown.push(line.to_owned()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_properties_and_the_rest_is_kept_aside() {
        let mut properties = CallProperties::default();
        properties.add("serial create-episode\nlong_running consolidate-light\n\nfuture x\nserial");
        assert!(properties.is_serial("create-episode"));
        assert!(!properties.is_serial("recall-episodes"));
        assert!(properties.is_long_running("consolidate-light"));
        assert_eq!(properties.unknown, vec!["future x", "serial"]);
    }
}

//! Policy load errors: each names its file, line and column, and a load reports all of them at once.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

/// One policy file's text and the name it is reported under.
#[derive(Debug, Clone)]
pub struct Source {
    /// The path as the operator gave it (directory joined with the file name).
    pub name: Arc<str>,
    /// The file's contents.
    pub text: String,
    /// Byte offsets where lines start, computed on first use: a policy of ten thousand rules asks for
    /// tens of thousands of locations, and counting lines from the top each time is quadratic.
    line_starts: OnceLock<Vec<usize>>,
}

impl Source {
    /// A source from its name and text.
    pub fn new(name: impl Into<Arc<str>>, text: impl Into<String>) -> Self {
        Source {
            name: name.into(),
            text: text.into(),
            line_starts: OnceLock::new(),
        }
    }

    /// The location of a byte offset in this file.
    pub fn location(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let starts = self.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(self.text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        let line = starts.partition_point(|&s| s <= offset);
        let line_start = starts.get(line.saturating_sub(1)).copied().unwrap_or(0);
        let col = self.text.get(line_start..offset).map_or(0, |s| s.chars().count()) + 1;
        Location {
            file: self.name.clone(),
            line: line as u32,
            col: col as u32,
        }
    }

    /// The location of the first occurrence of `needle` inside `span`, else of the span's start: points an
    /// error at the exact value (a region inside a selector, a variable inside a template).
    pub fn location_of(&self, span: &Range<usize>, needle: &str) -> Location {
        let found = self
            .text
            .get(span.clone())
            .and_then(|s| if needle.is_empty() { None } else { s.find(needle) })
            .map_or(span.start, |i| span.start + i);
        self.location(found)
    }

    /// The text of a span, for traces that quote what the operator wrote.
    pub fn snippet(&self, span: &Range<usize>) -> &str {
        self.text.get(span.clone()).unwrap_or("")
    }
}

/// Where something is in the policy directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// File name as reported.
    pub file: Arc<str>,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub col: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// One problem in the policy directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// Where it is; `None` for problems with the directory itself.
    pub location: Option<Location>,
    /// What is wrong, lowercase, one line.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(loc) => write!(f, "{loc}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Every problem a load found, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl PolicyErrors {
    /// A single error without a location.
    pub fn single(message: impl Into<String>) -> Self {
        PolicyErrors(vec![PolicyError {
            location: None,
            message: message.into(),
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_one_based_lines_and_character_columns() {
        let src = Source::new("a.toml", "x = 1\n  é = \"v\"\n");
        assert_eq!(src.location(0).to_string(), "a.toml:1:1");
        let v = src.text.find("\"v\"").expect("present");
        assert_eq!(src.location(v).to_string(), "a.toml:2:7");
        assert_eq!(src.location_of(&(6..17), "\"v\"").to_string(), "a.toml:2:7");
        assert_eq!(src.location(10_000).line, 3);
    }
}

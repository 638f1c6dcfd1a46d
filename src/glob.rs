//! A small, bounded glob matcher for watch subscriptions, over relative paths.
//!
//! The whole path must match (`*.pdf` matches `a.pdf`, not `dir/a.pdf`):
//! - `*` matches any run of characters except `/`;
//! - `?` matches one character except `/`;
//! - `**` matches any run of characters, `/` included; as a whole segment followed by `/`
//!   (`**/*.txt`, `a/**/b`) it matches zero or more whole folders, so `**/*.txt` matches `a.txt`
//!   and `x/y/a.txt`, and `a/**/b` matches `a/b`;
//! - `\c` matches `c` literally; every other character matches itself.
//!
//! Matching simulates the pattern's automaton over the path, one character at a time: time is
//! at most (path length × pattern length), with no backtracking, and patterns are limited to
//! [`MAX_GLOB`] bytes.

use thiserror::Error;

/// Longest glob accepted, in bytes.
pub const MAX_GLOB: usize = 1024;

/// Why a glob was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GlobError {
    #[error("empty glob")]
    Empty,
    #[error("glob longer than {MAX_GLOB} bytes")]
    TooLong,
    #[error("glob must be relative (no leading `/`)")]
    Absolute,
    #[error("glob contains a control character")]
    ControlChar,
    #[error("glob ends with a lone `\\`")]
    TrailingEscape,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `?`
    One,
    /// `*`
    Star,
    /// `**` not forming a `**/` segment.
    Any,
    /// The start of a `**/` segment: may be skipped (zero folders), or consumes a character and
    /// moves to the following [`Tok::DirsInner`] (a `/` may also end it at once).
    DirsEnter,
    /// Inside a `**/` segment: consumes any character; a `/` may end it.
    DirsInner,
}

/// A compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    source: String,
    toks: Vec<Tok>,
}

impl Glob {
    /// Compile `pattern`.
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        if pattern.is_empty() {
            return Err(GlobError::Empty);
        }
        if pattern.len() > MAX_GLOB {
            return Err(GlobError::TooLong);
        }
        if pattern.starts_with('/') {
            return Err(GlobError::Absolute);
        }
        if pattern.chars().any(char::is_control) {
            return Err(GlobError::ControlChar);
        }
        let chars: Vec<char> = pattern.chars().collect();
        let mut toks = Vec::with_capacity(chars.len());
        let mut i = 0;
        while let Some(&c) = chars.get(i) {
            match c {
                '\\' => {
                    let next = chars.get(i + 1).ok_or(GlobError::TrailingEscape)?;
                    toks.push(Tok::Lit(*next));
                    i += 2;
                }
                '?' => {
                    toks.push(Tok::One);
                    i += 1;
                }
                '*' if chars.get(i + 1) == Some(&'*') => {
                    let mut end = i + 2;
                    while chars.get(end) == Some(&'*') {
                        end += 1; // `***` is `**`
                    }
                    let seg_start = i == 0 || chars.get(i - 1) == Some(&'/');
                    if seg_start && chars.get(end) == Some(&'/') {
                        toks.push(Tok::DirsEnter);
                        toks.push(Tok::DirsInner);
                        end += 1; // the `/` belongs to the segment
                    } else {
                        toks.push(Tok::Any);
                    }
                    i = end;
                }
                '*' => {
                    if toks.last() != Some(&Tok::Star) {
                        toks.push(Tok::Star);
                    }
                    i += 1;
                }
                c => {
                    toks.push(Tok::Lit(c));
                    i += 1;
                }
            }
        }
        Ok(Glob {
            source: pattern.to_string(),
            toks,
        })
    }

    /// The pattern as given.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Which folders a path the glob matches can be in: the folder named by the glob's literal
    /// leading segments (`""` for the mount's root), and how many folders deep below it (`None`:
    /// any depth, the glob has a `**`). `reports/*.pdf` → `("reports", Some(0))`, `a/*/b.txt` →
    /// `("a", Some(1))`, `**/*.pdf` → `("", None)`, `notes.txt` → `("", Some(0))`.
    pub fn reach(&self) -> (String, Option<usize>) {
        let lit_end = self
            .toks
            .iter()
            .position(|t| !matches!(t, Tok::Lit(_)))
            .unwrap_or(self.toks.len());
        let literal: String = self.toks[..lit_end]
            .iter()
            .map(|t| match t {
                Tok::Lit(c) => *c,
                _ => unreachable!(),
            })
            .collect();
        // The folder is the literal part up to its last `/` (a literal last segment is a name).
        let (dir, rest_start) = match literal.rfind('/') {
            Some(i) => (literal[..i].to_string(), i + 1),
            None => (String::new(), 0),
        };
        let rest = &self.toks[literal[..rest_start].chars().count()..];
        if rest
            .iter()
            .any(|t| matches!(t, Tok::Any | Tok::DirsEnter | Tok::DirsInner))
        {
            return (dir, None);
        }
        let depth = rest.iter().filter(|t| **t == Tok::Lit('/')).count();
        (dir, Some(depth))
    }

    /// Whether the whole of `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        let n = self.toks.len();
        let mut cur = vec![false; n + 1];
        let mut next = vec![false; n + 1];
        self.add(&mut cur, 0);
        for c in path.chars() {
            next.iter_mut().for_each(|s| *s = false);
            let mut any = false;
            for (i, tok) in self.toks.iter().enumerate() {
                if !cur.get(i).copied().unwrap_or(false) {
                    continue;
                }
                any = true;
                match *tok {
                    Tok::Lit(l) if l == c => self.add(&mut next, i + 1),
                    Tok::Lit(_) => {}
                    Tok::One if c != '/' => self.add(&mut next, i + 1),
                    Tok::One => {}
                    Tok::Star if c != '/' => self.add(&mut next, i),
                    Tok::Star => {}
                    Tok::Any => self.add(&mut next, i),
                    Tok::DirsEnter => {
                        if c == '/' {
                            self.add(&mut next, i + 2);
                        } else {
                            self.add(&mut next, i + 1);
                        }
                    }
                    Tok::DirsInner => {
                        self.add(&mut next, i);
                        if c == '/' {
                            self.add(&mut next, i + 1);
                        }
                    }
                }
            }
            if !any {
                return false;
            }
            std::mem::swap(&mut cur, &mut next);
        }
        cur.get(n).copied().unwrap_or(false)
    }

    /// Mark state `i` and what it reaches without consuming a character.
    fn add(&self, states: &mut [bool], mut i: usize) {
        loop {
            let Some(s) = states.get_mut(i) else { return };
            *s = true;
            match self.toks.get(i) {
                Some(Tok::Star | Tok::Any) => i += 1,
                Some(Tok::DirsEnter) => i += 2,
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, path: &str) -> bool {
        Glob::new(p).unwrap().matches(path)
    }

    #[test]
    fn literals_and_question_marks() {
        assert!(m("a.txt", "a.txt"));
        assert!(!m("a.txt", "a.txtx"));
        assert!(!m("a.txt", "b/a.txt"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "a/c"));
        assert!(!m("a?c", "ac"));
        assert!(m("d/é?", "d/éx"));
    }

    #[test]
    fn star_stays_in_its_segment() {
        assert!(m("*.pdf", "q1.pdf"));
        assert!(m("*.pdf", ".pdf"));
        assert!(!m("*.pdf", "reports/q1.pdf"));
        assert!(!m("*.pdf", "q1.pdf.txt"));
        assert!(m("reports/*", "reports/q1.pdf"));
        assert!(!m("reports/*", "reports/sub/q1.pdf"));
        assert!(!m("reports/*", "reports"));
        assert!(m("*/*.txt", "a/b.txt"));
        assert!(!m("*/*.txt", "b.txt"));
        assert!(m("a*b*c", "axxbyyc"));
        assert!(m("a**", "a/b/c"));
    }

    #[test]
    fn double_star_crosses_folders() {
        assert!(m("reports/**", "reports/q1.pdf"));
        assert!(m("reports/**", "reports/2024/q1.pdf"));
        assert!(!m("reports/**", "reports"));
        assert!(!m("reports/**", "notes.pdf"));
        assert!(!m("reports/**", "reportsx/a"));
        assert!(m("**/*.txt", "a.txt"));
        assert!(m("**/*.txt", "x/y/a.txt"));
        assert!(!m("**/*.txt", "x/y/a.pdf"));
        assert!(!m("**/a", "xa"));
        assert!(m("**/a", "x/a"));
        assert!(m("a/**/b", "a/b"));
        assert!(m("a/**/b", "a/x/y/b"));
        assert!(!m("a/**/b", "a/xb"));
        assert!(!m("a/**/b", "ab"));
        assert!(m("**", "anything/at/all"));
        assert!(m("x**y", "x/a/y"));
        assert!(m("***/z", "q/z"));
    }

    #[test]
    fn reach_is_the_literal_folder_and_the_depth_below() {
        let r = |p: &str| Glob::new(p).unwrap().reach();
        assert_eq!(r("reports/*.pdf"), ("reports".into(), Some(0)));
        assert_eq!(r("a/*/b.txt"), ("a".into(), Some(1)));
        assert_eq!(r("**/*.pdf"), ("".into(), None));
        assert_eq!(r("reports/**"), ("reports".into(), None));
        assert_eq!(r("notes.txt"), ("".into(), Some(0)));
        assert_eq!(r("a/b/c.txt"), ("a/b".into(), Some(0)));
        assert_eq!(r("a/b*/c"), ("a".into(), Some(1)));
        assert_eq!(r("x**y"), ("".into(), None));
    }

    #[test]
    fn escapes() {
        assert!(m("a\\*", "a*"));
        assert!(!m("a\\*", "ab"));
        assert!(m("\\?", "?"));
        assert_eq!(Glob::new("a\\"), Err(GlobError::TrailingEscape));
    }

    #[test]
    fn refused_patterns() {
        assert_eq!(Glob::new(""), Err(GlobError::Empty));
        assert_eq!(Glob::new("/a"), Err(GlobError::Absolute));
        assert_eq!(Glob::new("a\nb"), Err(GlobError::ControlChar));
        assert_eq!(
            Glob::new(&"a".repeat(MAX_GLOB + 1)),
            Err(GlobError::TooLong)
        );
        assert!(Glob::new(&"*".repeat(MAX_GLOB)).is_ok());
    }

    #[test]
    fn pathological_patterns_stay_fast() {
        let g = Glob::new(&"*a".repeat(200)).unwrap();
        let path = "a".repeat(4000) + "b";
        let t = std::time::Instant::now();
        assert!(!g.matches(&path));
        assert!(g.matches(&"a".repeat(400)));
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
    }
}

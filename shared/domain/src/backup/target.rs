//! Backup targets: where an integration's documents are committed (directory, filename,
//! branch), with the optional commit author and message template. Every path and name is
//! checked here, before anything reaches Bitbucket.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, invalid};

/// The placeholders a message template may use.
pub const PLACEHOLDERS: &[&str] = &["{target}", "{path}", "{filename}", "{branch}", "{version}", "{sha256}"];
pub const DEFAULT_MESSAGE: &str = "Back up {filename} (version {version})";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupTarget {
    pub name: String,
    /// Repository-relative, without leading or trailing `/`; empty for the root.
    pub directory: String,
    pub filename: String,
    pub branch: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl BackupTarget {
    pub fn path(&self) -> String {
        if self.directory.is_empty() { self.filename.clone() } else { format!("{}/{}", self.directory, self.filename) }
    }

    /// The commit message: the snapshot's own, or the target's template filled in.
    pub fn commit_message(&self, own: Option<&str>, version: u64, sha256: &str) -> String {
        if let Some(own) = own.map(str::trim).filter(|m| !m.is_empty()) {
            return own.to_owned();
        }
        self.message
            .as_deref()
            .unwrap_or(DEFAULT_MESSAGE)
            .replace("{target}", &self.name)
            .replace("{path}", &self.path())
            .replace("{filename}", &self.filename)
            .replace("{branch}", &self.branch)
            .replace("{version}", &version.to_string())
            .replace("{sha256}", &sha256[..12.min(sha256.len())])
    }
}

/// `PUT /integrations/{id}/backup-targets/{name}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    #[serde(default)]
    pub directory: String,
    pub filename: String,
    pub branch: String,
    pub author: Option<String>,
    /// Message template, e.g. `"Back up {filename} (version {version})"`.
    pub message: Option<String>,
}

/// Target names appear in URLs and keys: 1–64 of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && name != "."
        && name != "..";
    if ok { Ok(()) } else { Err(invalid("name", "must be 1-64 of letters, digits and . _ - (not . or ..)")) }
}

/// One path segment: not empty, `.` or `..`, no `"`, `\` or control characters — so a target
/// can never point outside the repository or at something Bitbucket would read differently
/// (Cloud takes the path as a form field's name, which a `"` or a line break would cut).
fn check_segment(field: &'static str, segment: &str) -> Result<(), Error> {
    if segment.is_empty() {
        return Err(invalid(field, "must not contain empty path segments"));
    }
    if segment == "." || segment == ".." {
        return Err(invalid(field, "must not contain `.` or `..` segments"));
    }
    if segment.len() > 255 {
        return Err(invalid(field, "has a path segment longer than 255 bytes"));
    }
    if !crate::bitbucket::form_safe(segment) {
        return Err(invalid(field, "must not contain `\"`, `\\` or control characters"));
    }
    Ok(())
}

fn check_branch(branch: &str) -> Result<(), Error> {
    if crate::bitbucket::valid_branch_name(branch) {
        Ok(())
    } else {
        Err(invalid("branch", "is not a valid git branch name"))
    }
}

fn check_author(author: &str) -> Result<(), Error> {
    let well_formed = author.len() <= 255
        && !author.chars().any(char::is_control)
        && author.split_once(" <").is_some_and(|(name, rest)| {
            !name.trim().is_empty() && rest.ends_with('>') && rest[..rest.len() - 1].contains('@')
        });
    if well_formed { Ok(()) } else { Err(invalid("author", "must look like `Name <email@example.com>`")) }
}

fn check_template(template: &str) -> Result<(), Error> {
    if template.trim().is_empty() || template.chars().count() > 500 {
        return Err(invalid("message", "must be 1-500 characters"));
    }
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').ok_or_else(|| invalid("message", "has an unclosed `{`"))?;
        let placeholder = &rest[open..open + close + 1];
        if !PLACEHOLDERS.contains(&placeholder) {
            return Err(invalid(
                "message",
                format!("unknown placeholder {placeholder}; use {}", PLACEHOLDERS.join(", ")),
            ));
        }
        rest = &rest[open + close + 1..];
    }
    Ok(())
}

impl TargetSpec {
    /// The target this spec describes, or the first problem by field name.
    pub fn into_target(self, name: &str, now: DateTime<Utc>) -> Result<BackupTarget, Error> {
        check_name(name)?;
        // Spaces and slashes are trimmed together: one after the other could leave the first at
        // an end (`"a /"` became `"a "`), and the target changed when defined again.
        let directory = self.directory.trim_matches(|c: char| c == '/' || c.is_whitespace()).to_owned();
        if !directory.is_empty() {
            for segment in directory.split('/') {
                check_segment("directory", segment)?;
            }
        }
        let filename = self.filename.trim().to_owned();
        if filename.contains('/') {
            return Err(invalid("filename", "must not contain `/` (put folders in `directory`)"));
        }
        check_segment("filename", &filename)?;
        if directory.len() + filename.len() > 1024 {
            return Err(invalid("filename", "makes a path longer than 1024 bytes"));
        }
        let branch = self.branch.trim().to_owned();
        check_branch(&branch)?;
        let author = self.author.map(|a| a.trim().to_owned()).filter(|a| !a.is_empty());
        if let Some(author) = &author {
            check_author(author)?;
        }
        if let Some(template) = &self.message {
            check_template(template)?;
        }
        Ok(BackupTarget {
            name: name.to_owned(),
            directory,
            filename,
            branch,
            author,
            message: self.message,
            created_at: now,
            updated_at: now,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(directory: &str, filename: &str, branch: &str) -> TargetSpec {
        TargetSpec {
            directory: directory.into(),
            filename: filename.into(),
            branch: branch.into(),
            author: None,
            message: None,
        }
    }

    fn field_of(result: Result<BackupTarget, Error>) -> &'static str {
        match result {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn paths_are_normalised_and_traversal_refused() {
        let now = Utc::now();
        let t = spec("/backups/postman/", "api.json", "backups").into_target("api", now).unwrap();
        assert_eq!(t.path(), "backups/postman/api.json");
        assert_eq!(spec("", "a.json", "main").into_target("a", now).unwrap().path(), "a.json");
        for (directory, filename, field) in [
            ("../etc", "a.json", "directory"),
            ("a/../../b", "a.json", "directory"),
            ("a//b", "a.json", "directory"),
            ("a\\b", "a.json", "directory"),
            ("./a", "a.json", "directory"),
            ("a", "..", "filename"),
            ("a", "b/c.json", "filename"),
            ("a", "", "filename"),
            ("a", "x\u{0}.json", "filename"),
            ("", "important.json\".bak", "filename"),
            ("", "a\r\nContent-Disposition: form-data; name=\"message\"", "filename"),
            ("we\"ird", "a.json", "directory"),
        ] {
            assert_eq!(
                field_of(spec(directory, filename, "main").into_target("t", now)),
                field,
                "{directory} {filename}"
            );
        }
        for branch in ["", "a b", "a..b", "/a", "a/", "a.lock", "a:b", "-x"] {
            assert_eq!(field_of(spec("", "a.json", branch).into_target("t", now)), "branch", "{branch:?}");
        }
        for name in ["", ".", "..", "a/b", "a b", &"x".repeat(65)] {
            assert_eq!(field_of(spec("", "a.json", "main").into_target(name, now)), "name", "{name:?}");
        }
    }

    #[test]
    fn directories_are_normalised_once_and_for_all() {
        // Found by fuzz/admin_bodies: `"a /"` was stored as `"a "`, which defined again became `"a"`.
        let now = Utc::now();
        for (directory, stored) in [("a /", "a"), ("/backups/postman   /  ", "backups/postman"), (" / a/ b /", "a/ b")]
        {
            let t = spec(directory, "f.json", "main").into_target("t", now).unwrap();
            assert_eq!(t.directory, stored, "{directory:?}");
            let again = spec(&t.directory, "f.json", "main").into_target("t", now).unwrap();
            assert_eq!(again, t, "{directory:?}");
        }
    }

    #[test]
    fn authors_and_templates() {
        let now = Utc::now();
        let mut s = spec("", "c.json", "main");
        s.author = Some("Backup Bot <bot@example.com>".into());
        s.message = Some("Back up {target}: {path} v{version} ({sha256})".into());
        let t = s.clone().into_target("coll", now).unwrap();
        assert_eq!(t.commit_message(None, 7, "0123456789abcdef"), "Back up coll: c.json v7 (0123456789ab)");
        assert_eq!(t.commit_message(Some("  mine "), 7, "00"), "mine");
        s.author = Some("no email".into());
        assert_eq!(field_of(s.clone().into_target("coll", now)), "author");
        s.author = None;
        s.message = Some("{oops}".into());
        assert_eq!(field_of(s.clone().into_target("coll", now)), "message");
        s.message = Some("open {".into());
        assert_eq!(field_of(s.into_target("coll", now)), "message");
        let plain = spec("", "c.json", "main").into_target("c", now).unwrap();
        assert_eq!(plain.commit_message(None, 3, "ab"), "Back up c.json (version 3)");
    }
}

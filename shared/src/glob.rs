//! Branch-name globs as Bitbucket writes them: `*` matches within one path segment, `**` across
//! segments, everything else literally (`release/*`, `feature/**`, `main`).

pub fn matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p {
            [] => n.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=n.len()).any(|i| go(rest, &n[i..])),
            [b'*', rest @ ..] => (0..=n.len()).take_while(|&i| i == 0 || n[i - 1] != b'/').any(|i| go(rest, &n[i..])),
            [c, rest @ ..] => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

pub fn any_matches(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| matches(p, name))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn single_and_double_stars() {
        assert!(matches("main", "main") && !matches("main", "main2"));
        assert!(matches("release/*", "release/1.0"));
        assert!(!matches("release/*", "release/1.0/hotfix"));
        assert!(matches("feature/**", "feature/a/b"));
        assert!(matches("*", "develop") && !matches("*", "feature/x"));
        assert!(matches("**", "feature/x"));
        assert!(matches("hotfix-*-final", "hotfix-12-final") && !matches("hotfix-*-final", "hotfix-12"));
    }
}

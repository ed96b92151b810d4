//! Branch-name globs as Bitbucket writes them: `*` matches within one path segment, `**` across
//! segments, everything else literally (`release/*`, `feature/**`, `main`).

pub fn matches(pattern: &str, name: &str) -> bool {
    // One pass per pattern token over a row of "the pattern so far matches `name[..j]`", so the
    // cost is pattern length × name length. (The backtracking version was exponential in the
    // number of stars: fuzz/admin_bodies hung on a 61-byte `build_branches` glob.)
    let name = name.as_bytes();
    let mut row = vec![false; name.len() + 1];
    row[0] = true;
    let mut next = vec![false; name.len() + 1];
    let mut pattern = pattern.as_bytes();
    while let Some((token, rest)) = Token::first(pattern) {
        pattern = rest;
        next[0] = match token {
            Token::Byte(_) => false,
            Token::AnySegment | Token::AnyPath => row[0],
        };
        for j in 1..=name.len() {
            next[j] = match token {
                Token::Byte(c) => row[j - 1] && name[j - 1] == c,
                Token::AnySegment => row[j] || (next[j - 1] && name[j - 1] != b'/'),
                Token::AnyPath => row[j] || next[j - 1],
            };
        }
        std::mem::swap(&mut row, &mut next);
    }
    row[name.len()]
}

/// One step of a glob: `**` (any bytes), `*` (any bytes but `/`), or a literal byte.
#[derive(Clone, Copy)]
enum Token {
    AnyPath,
    AnySegment,
    Byte(u8),
}

impl Token {
    /// The pattern's first token and the rest (`***` is `**` then `*`).
    fn first(pattern: &[u8]) -> Option<(Token, &[u8])> {
        match pattern {
            [] => None,
            [b'*', b'*', rest @ ..] => Some((Token::AnyPath, rest)),
            [b'*', rest @ ..] => Some((Token::AnySegment, rest)),
            [c, rest @ ..] => Some((Token::Byte(*c), rest)),
        }
    }
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

    /// The backtracking definition the matcher replaced: the reference for its semantics.
    fn reference(p: &[u8], n: &[u8]) -> bool {
        match p {
            [] => n.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=n.len()).any(|i| reference(rest, &n[i..])),
            [b'*', rest @ ..] => {
                (0..=n.len()).take_while(|&i| i == 0 || n[i - 1] != b'/').any(|i| reference(rest, &n[i..]))
            }
            [c, rest @ ..] => n.first() == Some(c) && reference(rest, &n[1..]),
        }
    }

    /// Every string of up to `len` bytes over `alphabet`.
    fn strings(alphabet: &[u8], len: usize) -> Vec<Vec<u8>> {
        let mut all = vec![Vec::new()];
        let mut last = vec![Vec::new()];
        for _ in 0..len {
            last = last
                .iter()
                .flat_map(|s: &Vec<u8>| alphabet.iter().map(move |&c| [s.as_slice(), &[c]].concat()))
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    #[test]
    fn agrees_with_the_backtracking_definition() {
        let names = strings(b"ab/", 5);
        for pattern in strings(b"a*/", 6) {
            for name in &names {
                let (p, n) = (std::str::from_utf8(&pattern).unwrap(), std::str::from_utf8(name).unwrap());
                assert_eq!(matches(p, n), reference(&pattern, name), "{p:?} {n:?}");
            }
        }
    }

    #[test]
    fn many_stars_take_linear_time() {
        // Found by fuzz/admin_bodies (a timeout): 30 `**` took over 10 s against an 11-byte name.
        let pattern = format!("{}x", "**".repeat(2000));
        let name = "feature/a/b".repeat(20);
        let started = std::time::Instant::now();
        assert!(!matches(&pattern, &name) && matches(&pattern, &format!("{name}x")));
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
    }
}

//! Cloud's filter and sort query parameters (narrative "Filter and sort API objects"): `q` in a
//! subset of BBQL — comparisons `field op value` with `=`, `!=`, `~` (contains, any case), `!~`,
//! `>`, `>=`, `<`, `<=`, `IN (…)`, `NOT IN (…)`; values quoted strings, numbers, `true`, `false`,
//! `null` or bare datetimes; `AND`, `OR` (any case) and parentheses — and `sort=field` /
//! `sort=-field`. Fields are dotted paths into the
//! objects the listing returns (`source.branch.name`), each listing naming the fields it allows;
//! anything else is a 400, as Bitbucket refuses a query it cannot apply rather than ignoring it.

use std::cmp::Ordering;

use serde_json::Value;

use crate::error::Error;

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Text(String),
    Number(f64),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Contains,
    NotContains,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A parsed `q`.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Compare { field: String, op: Op, value: Literal },
    In { field: String, values: Vec<Literal>, negated: bool },
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Op(Op),
    Open,
    Close,
    Comma,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::bad_request(format!("Invalid query (q): {}", message.into()))
}

fn tokens(q: &str) -> Result<Vec<Token>, Error> {
    let chars: Vec<char> = q.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            _ if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            ',' => {
                out.push(Token::Comma);
                i += 1;
            }
            '"' => {
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(invalid("unterminated string")),
                        Some('"') => break,
                        Some('\\') => {
                            text.extend(chars.get(i + 1));
                            i += 2;
                        }
                        Some(c) => {
                            text.push(*c);
                            i += 1;
                        }
                    }
                }
                out.push(Token::Text(text));
                i += 1;
            }
            '=' => {
                out.push(Token::Op(Op::Eq));
                i += 1;
            }
            '~' => {
                out.push(Token::Op(Op::Contains));
                i += 1;
            }
            '!' if next == Some('=') => {
                out.push(Token::Op(Op::Ne));
                i += 2;
            }
            '!' if next == Some('~') => {
                out.push(Token::Op(Op::NotContains));
                i += 2;
            }
            '>' | '<' => {
                let or_equal = next == Some('=');
                out.push(Token::Op(match (c, or_equal) {
                    ('>', false) => Op::Gt,
                    ('>', true) => Op::Ge,
                    ('<', false) => Op::Lt,
                    _ => Op::Le,
                }));
                i += if or_equal { 2 } else { 1 };
            }
            _ => {
                let start = i;
                while i < chars.len() && !chars[i].is_whitespace() && !"()=~!<>\",".contains(chars[i]) {
                    i += 1;
                }
                if i == start {
                    return Err(invalid(format!("unexpected {c:?}")));
                }
                out.push(Token::Word(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: Vec<Token>,
    at: usize,
    fields: &'a [&'a str],
}

impl Parser<'_> {
    fn peek_keyword(&self, keyword: &str) -> bool {
        matches!(self.tokens.get(self.at), Some(Token::Word(w)) if w.eq_ignore_ascii_case(keyword))
    }

    fn or(&mut self) -> Result<Filter, Error> {
        let mut left = self.and()?;
        while self.peek_keyword("OR") {
            self.at += 1;
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, Error> {
        let mut left = self.unary()?;
        while self.peek_keyword("AND") {
            self.at += 1;
            left = Filter::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, Error> {
        if self.tokens.get(self.at) == Some(&Token::Open) {
            self.at += 1;
            let inner = self.or()?;
            if self.tokens.get(self.at) != Some(&Token::Close) {
                return Err(invalid("missing )"));
            }
            self.at += 1;
            return Ok(inner);
        }
        let field = match self.tokens.get(self.at) {
            Some(Token::Word(w)) => w.clone(),
            other => return Err(invalid(format!("expected a field name, found {other:?}"))),
        };
        if !self.fields.contains(&field.as_str()) {
            return Err(invalid(format!(
                "'{field}' is not a field you can filter on (fields: {})",
                self.fields.join(", ")
            )));
        }
        self.at += 1;
        let negated = self.peek_keyword("NOT");
        if negated {
            self.at += 1;
        }
        if self.peek_keyword("IN") {
            self.at += 1;
            return Ok(Filter::In { field, values: self.list()?, negated });
        }
        if negated {
            return Err(invalid(format!("expected IN after {field} NOT")));
        }
        let op = match self.tokens.get(self.at) {
            Some(Token::Op(op)) => *op,
            _ => return Err(invalid(format!("expected an operator after {field}"))),
        };
        self.at += 1;
        let value = self.value().ok_or_else(|| invalid(format!("expected a value after {field}")))?;
        Ok(Filter::Compare { field, op, value })
    }

    fn value(&mut self) -> Option<Literal> {
        let value = match self.tokens.get(self.at)? {
            Token::Text(t) => Literal::Text(t.clone()),
            Token::Word(w) => match w.as_str() {
                "true" => Literal::Bool(true),
                "false" => Literal::Bool(false),
                "null" => Literal::Null,
                _ => w.parse::<f64>().map(Literal::Number).unwrap_or_else(|_| Literal::Text(w.clone())),
            },
            _ => return None,
        };
        self.at += 1;
        Some(value)
    }

    /// `( value, value, … )`.
    fn list(&mut self) -> Result<Vec<Literal>, Error> {
        if self.tokens.get(self.at) != Some(&Token::Open) {
            return Err(invalid("expected ( after IN"));
        }
        self.at += 1;
        let mut values = Vec::new();
        loop {
            values.push(self.value().ok_or_else(|| invalid("expected a value in the IN list"))?);
            match self.tokens.get(self.at) {
                Some(Token::Comma) => self.at += 1,
                Some(Token::Close) => {
                    self.at += 1;
                    return Ok(values);
                }
                _ => return Err(invalid("expected , or ) in the IN list")),
            }
        }
    }
}

/// Parses `q`, allowing `fields`.
pub fn parse(q: &str, fields: &[&str]) -> Result<Filter, Error> {
    let mut parser = Parser { tokens: tokens(q)?, at: 0, fields };
    if parser.tokens.is_empty() {
        return Err(invalid("empty query"));
    }
    let filter = parser.or()?;
    if parser.at != parser.tokens.len() {
        return Err(invalid(format!("unexpected {:?}", parser.tokens[parser.at])));
    }
    Ok(filter)
}

/// The value at a dotted path.
fn lookup<'a>(item: &'a Value, field: &str) -> &'a Value {
    field.split('.').fold(item, |v, key| &v[key])
}

fn order(actual: &Value, wanted: &Literal) -> Option<Ordering> {
    match (actual, wanted) {
        (Value::Number(n), Literal::Number(w)) => n.as_f64()?.partial_cmp(w),
        (Value::String(s), Literal::Text(w)) => Some(s.as_str().cmp(w.as_str())),
        (Value::String(s), Literal::Number(w)) => s.parse::<f64>().ok()?.partial_cmp(w),
        (Value::Bool(b), Literal::Bool(w)) => Some(b.cmp(w)),
        (Value::Null, Literal::Null) => Some(Ordering::Equal),
        _ => None,
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl Filter {
    pub fn matches(&self, item: &Value) -> bool {
        match self {
            Filter::And(a, b) => a.matches(item) && b.matches(item),
            Filter::Or(a, b) => a.matches(item) || b.matches(item),
            Filter::In { field, values, negated } => {
                let actual = lookup(item, field);
                values.iter().any(|v| order(actual, v) == Some(Ordering::Equal)) != *negated
            }
            Filter::Compare { field, op, value } => {
                let actual = lookup(item, field);
                let contains = || match value {
                    Literal::Text(w) => text(actual).to_lowercase().contains(&w.to_lowercase()),
                    _ => false,
                };
                let ordering = order(actual, value);
                match op {
                    Op::Eq => ordering == Some(Ordering::Equal),
                    Op::Ne => ordering != Some(Ordering::Equal),
                    Op::Contains => contains(),
                    Op::NotContains => !contains(),
                    Op::Gt => ordering == Some(Ordering::Greater),
                    Op::Ge => matches!(ordering, Some(Ordering::Greater | Ordering::Equal)),
                    Op::Lt => ordering == Some(Ordering::Less),
                    Op::Le => matches!(ordering, Some(Ordering::Less | Ordering::Equal)),
                }
            }
        }
    }
}

/// Applies `q` (when given) to `values`.
pub fn filter(values: Vec<Value>, q: Option<&str>, fields: &[&str]) -> Result<Vec<Value>, Error> {
    let Some(q) = q.filter(|q| !q.trim().is_empty()) else { return Ok(values) };
    let filter = parse(q, fields)?;
    Ok(values.into_iter().filter(|v| filter.matches(v)).collect())
}

/// Sorts `values` by `sort` (`field` or `-field`, one of `fields`); stable.
pub fn sort(values: &mut [Value], sort: Option<&str>, fields: &[&str]) -> Result<(), Error> {
    let Some(sort) = sort.map(str::trim).filter(|s| !s.is_empty()) else { return Ok(()) };
    let (field, descending) = match sort.strip_prefix('-') {
        Some(field) => (field, true),
        None => (sort, false),
    };
    if !fields.contains(&field) {
        return Err(Error::bad_request(format!(
            "Invalid sort (sort): '{field}' is not a field you can sort on (fields: {})",
            fields.join(", ")
        )));
    }
    let key = |v: &Value| -> Literal {
        match lookup(v, field) {
            Value::Number(n) => Literal::Number(n.as_f64().unwrap_or_default()),
            Value::Bool(b) => Literal::Bool(*b),
            Value::Null => Literal::Null,
            other => Literal::Text(text(other)),
        }
    };
    values.sort_by(|a, b| {
        let ordering = match (key(a), key(b)) {
            (Literal::Number(x), Literal::Number(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
            (Literal::Text(x), Literal::Text(y)) => x.cmp(&y),
            (Literal::Bool(x), Literal::Bool(y)) => x.cmp(&y),
            _ => Ordering::Equal,
        };
        if descending { ordering.reverse() } else { ordering }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const FIELDS: &[&str] = &["id", "state", "source.branch.name", "title", "created_on"];

    fn pr(id: u64, state: &str, source: &str) -> Value {
        json!({ "id": id, "state": state, "source": { "branch": { "name": source } }, "title": format!("PR {id}") })
    }

    #[test]
    fn filters_with_and_or_and_parentheses() {
        let values = vec![pr(1, "OPEN", "feature/a"), pr(2, "MERGED", "feature/b"), pr(3, "OPEN", "fix/c")];
        let ids = |q: &str| -> Vec<u64> {
            filter(values.clone(), Some(q), FIELDS).unwrap().iter().map(|v| v["id"].as_u64().unwrap()).collect()
        };
        assert_eq!(ids(r#"state = "OPEN""#), [1, 3]);
        assert_eq!(ids(r#"source.branch.name = "feature/b""#), [2]);
        assert_eq!(ids(r#"source.branch.name ~ "FEATURE""#), [1, 2]);
        assert_eq!(ids(r#"state="OPEN" AND source.branch.name ~ "feature""#), [1]);
        assert_eq!(ids(r#"id = 2 OR id = 3"#), [2, 3]);
        assert_eq!(ids(r#"(state = "OPEN" OR state = "MERGED") AND id > 1"#), [2, 3]);
        assert_eq!(ids(r#"state != "OPEN""#), [2]);
        assert_eq!(ids(r#"title !~ "1""#), [2, 3]);
        assert_eq!(ids(r#"state IN ("MERGED", "DECLINED")"#), [2]);
        assert_eq!(ids(r#"id NOT IN (1,3) or id = 1"#), [1, 2]);
        for bad in [
            "",
            "state",
            "state =",
            "nope = 1",
            r#"state = "OPEN" AND"#,
            "(id = 1",
            r#"id = "1"#,
            "id = 1 id = 2",
            "id IN 1",
            "id IN (1",
            "id NOT = 1",
        ] {
            assert!(filter(values.clone(), Some(bad), FIELDS).is_err() || bad.is_empty(), "{bad}");
        }
        assert!(parse("nope = 1", FIELDS).is_err());
    }

    #[test]
    fn sorts_either_way() {
        let mut values = vec![pr(2, "OPEN", "b"), pr(1, "OPEN", "a"), pr(3, "OPEN", "c")];
        sort(&mut values, Some("-id"), FIELDS).unwrap();
        assert_eq!(values.iter().map(|v| v["id"].as_u64().unwrap()).collect::<Vec<_>>(), [3, 2, 1]);
        sort(&mut values, Some("source.branch.name"), FIELDS).unwrap();
        assert_eq!(values[0]["id"], 1);
        assert!(sort(&mut values, Some("nope"), FIELDS).is_err());
    }
}

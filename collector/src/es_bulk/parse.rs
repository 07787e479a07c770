//! The NDJSON body of a `_bulk` request: action lines, each followed by
//! its document (except `delete`), as the Elasticsearch bulk API
//! documents them (Elasticsearch reference, "Bulk API", request body).

use serde_json::{Map, Value};

/// A bulk operation name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `index`: stored.
    Index,
    /// `create`: stored (what data streams take).
    Create,
    /// `update`: refused per item (log records are not updated).
    Update,
    /// `delete`: refused per item (log records are not deleted one by one).
    Delete,
}

impl Action {
    /// The name as written in the request and the answer's item.
    pub fn name(self) -> &'static str {
        match self {
            Action::Index => "index",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

/// One operation of the request, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    /// The action.
    pub action: Action,
    /// `_index` of the action line, else the one of the path.
    pub index: String,
    /// `_id` of the action line, if any.
    pub id: Option<String>,
    /// The document (`index`, `create`), or why the item fails: a source
    /// line that is not a JSON object, an invalid index name, an action
    /// Skein does not take.
    pub doc: Result<Map<String, Value>, ItemError>,
}

/// Why one item failed: Elasticsearch's error `type` and `reason`, and
/// the item's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    /// The HTTP status of the item (400).
    pub status: u16,
    /// Elasticsearch's exception name.
    pub kind: &'static str,
    /// What was wrong, for a person.
    pub reason: String,
}

impl ItemError {
    pub(crate) fn bad(kind: &'static str, reason: String) -> Self {
        ItemError { status: 400, kind, reason }
    }
}

/// Why the whole request is refused (nothing stored): Elasticsearch
/// answers these with a 400 and its error envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    /// Elasticsearch's exception name.
    pub kind: &'static str,
    /// What was wrong, naming the line.
    pub reason: String,
}

fn malformed(line: usize, what: impl std::fmt::Display) -> RequestError {
    RequestError {
        kind: "illegal_argument_exception",
        reason: format!("Malformed action/metadata line [{line}], {what}"),
    }
}

/// Parses a bulk body of at most `max_ops` operations. `path_index` is the
/// `{index}` of `/{index}/_bulk`, the default for action lines without
/// `_index`.
///
/// Blank lines between operations are skipped, and the last line needs no
/// newline (Elasticsearch asks for one; accepting its absence loses
/// nothing).
///
/// # Errors
/// A line where an action is expected that is not a JSON object of one
/// key naming `index`, `create`, `update` or `delete` with an object of
/// metadata; an action with no index from either place; an `index`,
/// `create` or `update` with no source line after it; an empty body; more
/// than `max_ops` operations.
pub fn parse(body: &[u8], path_index: Option<&str>, max_ops: usize) -> Result<Vec<Op>, RequestError> {
    let mut ops = Vec::new();
    // The newline that ends the last line starts no line of its own.
    let end = body.iter().rposition(|b| !b"\r\n".contains(b)).map_or(0, |i| i + 1);
    let body = &body[..end];
    let mut lines =
        body.split(|&b| b == b'\n').enumerate().map(|(i, l)| (i + 1, l.strip_suffix(b"\r").unwrap_or(l)));
    while let Some((n, line)) = lines.next() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if ops.len() == max_ops {
            return Err(RequestError {
                kind: "illegal_argument_exception",
                reason: format!(
                    "the bulk request has more than {max_ops} operations (collector.max_bulk_operations); send smaller batches"
                ),
            });
        }
        let (action, meta) = action_line(n, line)?;
        let field = |k: &str| match meta.get(k) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(x)) => Some(x.to_string()),
            _ => None,
        };
        let index =
            field("_index").or_else(|| path_index.map(str::to_string)).ok_or_else(|| RequestError {
                kind: "action_request_validation_exception",
                reason: format!("Validation Failed: 1: index is missing for the action on line [{n}];"),
            })?;
        let id = field("_id");
        let doc = if action == Action::Delete {
            Err(ItemError::bad(
                "illegal_argument_exception",
                "delete is not supported: Skein stores log records and removes them only by retention".into(),
            ))
        } else {
            let Some((_, source)) = lines.next() else {
                return Err(RequestError {
                    kind: "illegal_argument_exception",
                    reason: format!(
                        "The bulk request must be terminated by a newline [\\n]: the {} action on line [{n}] has no source line",
                        action.name()
                    ),
                });
            };
            match action {
                Action::Update => Err(ItemError::bad(
                    "illegal_argument_exception",
                    "update is not supported: Skein stores log records as sent; use index or create".into(),
                )),
                _ => document(source),
            }
        };
        let doc = doc.and_then(|d| index_name(&index).map(|()| d));
        ops.push(Op { action, index, id, doc });
    }
    if ops.is_empty() {
        return Err(RequestError {
            kind: "action_request_validation_exception",
            reason: "Validation Failed: 1: no requests added;".into(),
        });
    }
    Ok(ops)
}

fn action_line(n: usize, line: &[u8]) -> Result<(Action, Map<String, Value>), RequestError> {
    let v: Value = serde_json::from_slice(line).map_err(|e| malformed(n, format_args!("not JSON: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(malformed(n, format_args!("expected START_OBJECT but found [{}]", kind_of(&v))));
    };
    let mut it = obj.into_iter();
    let (Some((name, meta)), None) = (it.next(), it.next()) else {
        return Err(malformed(n, "expected an object with exactly one field, the action"));
    };
    let action = match name.as_str() {
        "index" => Action::Index,
        "create" => Action::Create,
        "update" => Action::Update,
        "delete" => Action::Delete,
        _ => {
            return Err(malformed(
                n,
                format_args!("expected field [create, delete, index, update] but found [{name}]"),
            ))
        }
    };
    match meta {
        Value::Object(m) => Ok((action, m)),
        other => Err(malformed(
            n,
            format_args!("expected START_OBJECT after [{name}] but found [{}]", kind_of(&other)),
        )),
    }
}

fn document(line: &[u8]) -> Result<Map<String, Value>, ItemError> {
    let bad = |reason: String| ItemError::bad("document_parsing_exception", reason);
    match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => {
            Err(bad(format!("failed to parse: the source is [{}], not a JSON object", kind_of(&other))))
        }
        Err(e) => Err(bad(format!("failed to parse: {e}"))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "VALUE_NULL",
        Value::Bool(_) => "VALUE_BOOLEAN",
        Value::Number(_) => "VALUE_NUMBER",
        Value::String(_) => "VALUE_STRING",
        Value::Array(_) => "START_ARRAY",
        Value::Object(_) => "START_OBJECT",
    }
}

/// Elasticsearch's index-name rules (Elasticsearch reference, "Create index
/// API", index names): not empty, at most 255 bytes, lowercase, not
/// starting with `-`, `_` or `+`, not `.` or `..`, none of `\ / * ? " < > |
/// , #` or a space. Checked so that a name Elasticsearch would refuse is
/// refused here too, not stored under a name no query of it would use.
///
/// # Errors
/// The `invalid_index_name_exception` for the item.
pub fn index_name(name: &str) -> Result<(), ItemError> {
    let why = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > 255 {
        Some("index name is too long, (> 255)")
    } else if name.starts_with(['-', '_', '+']) {
        Some("must not start with '_', '-', or '+'")
    } else if name == "." || name == ".." {
        Some("must not be '.' or '..'")
    } else if name.chars().any(char::is_uppercase) {
        Some("must be lowercase")
    } else if name.contains(['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':']) {
        Some("must not contain the following characters [ , \", *, \\, <, |, ,, >, /, ?, #, :]")
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(w) => {
            Err(ItemError::bad("invalid_index_name_exception", format!("Invalid index name [{name}], {w}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn test_actions_and_sources() {
        let body = concat!(
            "{\"index\":{\"_index\":\"a\",\"_id\":\"1\"}}\n{\"message\":\"one\"}\n",
            "\n",
            "{\"create\":{}}\r\n{\"message\":\"two\"}\r\n",
            "{\"delete\":{\"_index\":\"a\",\"_id\":\"1\"}}\n",
            "{\"update\":{\"_id\":\"2\"}}\n{\"doc\":{}}\n",
            "{\"index\":{}}\n[1,2]\n",
            "{\"index\":{}}\n{not json\n",
            "{\"index\":{\"_index\":\"Bad\"}}\n{}\n",
            "{\"index\":{\"_id\":3}}\n{}"
        );
        let ops = parse(body.as_bytes(), Some("dflt"), 100).unwrap();
        let summary: Vec<_> = ops
            .iter()
            .map(|o| (o.action, o.index.as_str(), o.id.as_deref(), o.doc.as_ref().err().map(|e| e.kind)))
            .collect();
        assert_eq!(
            summary,
            [
                (Action::Index, "a", Some("1"), None),
                (Action::Create, "dflt", None, None),
                (Action::Delete, "a", Some("1"), Some("illegal_argument_exception")),
                (Action::Update, "dflt", Some("2"), Some("illegal_argument_exception")),
                (Action::Index, "dflt", None, Some("document_parsing_exception")),
                (Action::Index, "dflt", None, Some("document_parsing_exception")),
                (Action::Index, "Bad", None, Some("invalid_index_name_exception")),
                (Action::Index, "dflt", Some("3"), None),
            ]
        );
        assert_eq!(ops[1].doc.as_ref().unwrap()["message"], "two");
    }

    #[test]
    fn test_request_errors() {
        for (body, want) in [
            ("", "no requests added"),
            ("\n\n", "no requests added"),
            ("{\"index\":{}}\n{}\n", "index is missing"),
            ("not json\n{}\n", "Malformed action/metadata line [1], not JSON"),
            (
                "{\"index\":{\"_index\":\"a\"}}\n{}\n\"index\"\n{}\n",
                "line [3], expected START_OBJECT but found [VALUE_STRING]",
            ),
            (
                "{\"upsert\":{\"_index\":\"a\"}}\n{}\n",
                "expected field [create, delete, index, update] but found [upsert]",
            ),
            ("{\"index\":{\"_index\":\"a\"},\"create\":{}}\n{}\n", "exactly one field"),
            ("{\"index\":\"a\"}\n{}\n", "expected START_OBJECT after [index]"),
            ("{\"index\":{\"_index\":\"a\"}}\n", "has no source line"),
        ] {
            let err = parse(body.as_bytes(), None, 100).unwrap_err();
            assert!(err.reason.contains(want), "{body:?}: {err:?}");
        }
    }

    #[test]
    fn test_operation_limit() {
        let two = "{\"index\":{}}\n{}\n{\"delete\":{}}\n";
        assert_eq!(parse(two.as_bytes(), Some("i"), 2).unwrap().len(), 2);
        let err = parse(format!("{two}{two}").as_bytes(), Some("i"), 2).unwrap_err();
        assert!(err.reason.contains("more than 2 operations (collector.max_bulk_operations)"), "{err:?}");
    }

    #[test]
    fn test_index_names() {
        for ok in ["logs", "logstash-2024.05.01", "logs-generic-default", ".ds-x", "a_b"] {
            assert!(index_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "_all", "-x", "+x", ".", "..", "Logs", "a b", "a/b", "a*", "a,b", &"x".repeat(256)] {
            assert!(index_name(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        /// Whatever the bytes, parsing answers (never panics), and every
        /// operation it answers names an index.
        #[test]
        fn prop_any_body_parses_or_fails(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(ops) = parse(&body, Some("p"), 8) {
                prop_assert!(ops.iter().all(|o| !o.index.is_empty()));
            }
        }

        /// Lines made of bulk-like pieces, the shapes a fuzzer of bytes
        /// rarely reaches.
        #[test]
        fn prop_bulk_like_lines_never_panic(lines in proptest::collection::vec(prop_oneof![
            Just("{\"index\":{}}".to_string()),
            Just("{\"create\":{\"_index\":\"x\"}}".to_string()),
            Just("{\"delete\":{\"_id\":\"1\"}}".to_string()),
            Just("{\"update\":{}}".to_string()),
            Just(String::new()),
            "[a-z{}\":,\\[\\]0-9]{0,24}",
        ], 0..12)) {
            let _ = parse(lines.join("\n").as_bytes(), None, 4);
        }

        /// A valid body of documents of string fields parses back to the
        /// same operations, in order.
        #[test]
        fn prop_valid_body_round_trips(docs in proptest::collection::vec(
            (proptest::option::of("[a-z0-9]{1,8}"), proptest::collection::btree_map("[a-z@._]{1,8}", ".*", 0..5), any::<bool>()),
            1..10,
        )) {
            let mut body = String::new();
            for (id, doc, create) in &docs {
                let mut meta = serde_json::Map::new();
                if let Some(id) = id {
                    meta.insert("_id".into(), Value::String(id.clone()));
                }
                let action = if *create { "create" } else { "index" };
                body.push_str(&serde_json::json!({ action: meta }).to_string());
                body.push('\n');
                body.push_str(&serde_json::to_string(doc).unwrap());
                body.push('\n');
            }
            let ops = parse(body.as_bytes(), Some("idx"), 10).unwrap();
            prop_assert_eq!(ops.len(), docs.len());
            for (op, (id, doc, create)) in ops.iter().zip(&docs) {
                prop_assert_eq!(op.action, if *create { Action::Create } else { Action::Index });
                prop_assert_eq!(op.index.as_str(), "idx");
                prop_assert_eq!(op.id.as_ref(), id.as_ref());
                let want: Map<String, Value> = doc.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
                prop_assert_eq!(op.doc.as_ref().unwrap(), &want);
            }
        }
    }
}

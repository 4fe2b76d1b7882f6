//! The write side of the fake: PATCH, bulk_edit, creating and deleting objects, and the
//! DRF-style field validation they share.

use serde_json::{json, Map, Value};

use super::*;

/// Python's type name, as DRF puts it into error messages.
fn py_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// The request body as a JSON object (no body = `{}`), or DRF's 400.
fn json_object(req: &Req) -> Result<Map<String, Value>, Out> {
    match &req.json {
        _ if !req.has_body => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(other) => Err(out(
            400,
            json!({"non_field_errors": [format!(
                "Invalid data. Expected a dictionary, but got {}.", py_type(other))]}),
        )),
        None => Err(detail(400, "JSON parse error - not valid JSON")),
    }
}

/// DRF's PrimaryKeyRelatedField: an existing id (numeric strings allowed), else its message.
fn pk(st: &State, kind: Kind, v: &Value) -> Result<i64, String> {
    let id = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    let Some(id) = id else {
        return Err(format!(
            "Incorrect type. Expected pk value, received {}.",
            py_type(v)
        ));
    };
    if st.objects(kind).contains_key(&id) {
        Ok(id)
    } else {
        Err(format!("Invalid pk \"{id}\" - object does not exist."))
    }
}

/// DRF's CharField: strings (and numbers) trimmed, at most `max` characters.
fn char_field(v: &Value, max: Option<usize>) -> Result<String, String> {
    let s = match v {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        Value::Null => return Err("This field may not be null.".into()),
        _ => return Err("Not a valid string.".into()),
    };
    match max {
        Some(m) if s.chars().count() > m => Err(format!(
            "Ensure this field has no more than {m} characters."
        )),
        _ => Ok(s),
    }
}

/// `YYYY-MM-DD`; a datetime (with `:`) is cut to its date, as Paperless 3.x does.
fn date_field(v: &Value) -> Result<String, String> {
    let wrong = "Date has wrong format. Use one of these formats instead: YYYY-MM-DD.";
    let s = match v {
        Value::Null => return Err("This field may not be null.".into()),
        Value::String(s) if s.contains(':') && s.len() > 10 => s.get(..10).unwrap_or(""),
        Value::String(s) => s.as_str(),
        _ => return Err(wrong.into()),
    };
    let shaped = s.len() == 10 && s.as_bytes()[4] == b'-' && s.as_bytes()[7] == b'-';
    if shaped && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() {
        Ok(s.to_owned())
    } else {
        Err(wrong.into())
    }
}

fn now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn not_a_pk(v: &Value) -> String {
    format!(
        "Incorrect type. Expected pk value, received {}.",
        py_type(v)
    )
}

fn invalid_choice(v: &Value) -> String {
    let shown = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    format!("\"{shown}\" is not a valid choice.")
}

/// DRF's field errors, if any, as the 400 answer.
fn reject(errors: Map<String, Value>) -> Result<(), Out> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(out(400, Value::Object(errors)))
    }
}

/// The ids in order, each once (Paperless keeps tags as a set).
fn unique(ids: Vec<i64>) -> Vec<i64> {
    let mut out = Vec::new();
    for id in ids {
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

/// A list of distinct integer ids that all `exist`, as bulk_edit insists.
fn id_list(v: &Value, exists: impl Fn(&i64) -> bool) -> Option<Vec<i64>> {
    let items = v.as_array()?;
    let ids: Vec<i64> = items.iter().filter_map(Value::as_i64).collect();
    let distinct = unique(ids.clone()).len() == ids.len();
    (ids.len() == items.len() && distinct && ids.iter().all(exists)).then_some(ids)
}

/// PATCH: every given field is validated first; any error → 400 and nothing changes.
/// `tags` replaces the whole list.
pub(super) fn patch_document(
    st: &mut State,
    req: &Req,
    id: i64,
    touched: &mut Vec<i64>,
) -> Result<Out, Out> {
    let body = json_object(req)?;
    let mut doc = st.documents[&id].clone();
    let mut errors = Map::new();
    let mut fail = |field: &str, msg: String| {
        errors.insert(field.to_owned(), json!([msg]));
    };
    let relation = |kind, v: &Value| match v {
        Value::Null => Ok(None),
        _ => pk(st, kind, v).map(Some),
    };
    // In the serializer's field order, so a multi-field error object reads like Paperless's.
    if let Some(v) = body.get("correspondent") {
        let r = relation(Kind::Correspondent, v);
        r.map_or_else(|e| fail("correspondent", e), |c| doc.correspondent = c);
    }
    if let Some(v) = body.get("document_type") {
        let r = relation(Kind::DocumentType, v);
        r.map_or_else(|e| fail("document_type", e), |t| doc.document_type = t);
    }
    if let Some(v) = body.get("title") {
        char_field(v, Some(NAME_MAX)).map_or_else(|e| fail("title", e), |t| doc.title = t);
    }
    if let Some(v) = body.get("content") {
        char_field(v, None).map_or_else(|e| fail("content", e), |c| doc.content = c);
    }
    if let Some(v) = body.get("tags") {
        let tags = match v {
            Value::Array(items) => items.iter().map(|t| pk(st, Kind::Tag, t)).collect(),
            Value::Null => Err("This field may not be null.".to_owned()),
            other => Err(format!(
                "Expected a list of items but got type \"{}\".",
                py_type(other)
            )),
        };
        tags.map_or_else(|e| fail("tags", e), |t| doc.tags = unique(t));
    }
    if let Some(v) = body.get("created") {
        date_field(v).map_or_else(|e| fail("created", e), |c| doc.created = c);
    }
    reject(errors)?;
    doc.modified = now();
    st.documents.insert(id, doc.clone());
    touched.push(id);
    Ok(out(200, doc_json(st, &doc, Shape::Patch)))
}

const BULK_METHODS: [&str; 5] = [
    "add_tag",
    "remove_tag",
    "modify_tags",
    "set_correspondent",
    "set_document_type",
];

/// POST /api/documents/bulk_edit/: field errors first (documents, method), then the method's
/// parameters (`non_field_errors`), then the change itself.
pub(super) fn bulk_edit(st: &mut State, req: &Req, touched: &mut Vec<i64>) -> Result<Out, Out> {
    let body = json_object(req)?;
    let mut errors = Map::new();
    let docs = body
        .get("documents")
        .map(|v| id_list(v, |d| st.documents.contains_key(d)));
    let missing = "Some documents in documents don't exist or were specified twice.";
    match docs {
        None => errors.insert("documents".into(), json!(["This field is required."])),
        Some(None) => errors.insert("documents".into(), json!([missing])),
        Some(Some(_)) => None,
    };
    let method = body.get("method");
    match method.map(|m| m.as_str().filter(|m| BULK_METHODS.contains(m))) {
        None => errors.insert("method".into(), json!(["This field is required."])),
        Some(None) => errors.insert("method".into(), json!([invalid_choice(&body["method"])])),
        Some(Some(_)) => None,
    };
    reject(errors)?;
    let method = method.and_then(Value::as_str).unwrap_or_default();
    let params = body
        .get("parameters")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let change =
        bulk_change(st, method, &params).map_err(|m| field_error("non_field_errors", &m))?;
    let docs = docs.flatten().unwrap_or_default();
    for id in &docs {
        let d = st.documents.get_mut(id).expect("validated above");
        match &change {
            Change::Tags(add, remove) => {
                d.tags.retain(|t| !remove.contains(t));
                d.tags = unique(d.tags.iter().chain(add).copied().collect());
            }
            Change::Correspondent(c) => d.correspondent = *c,
            Change::DocumentType(t) => d.document_type = *t,
        }
    }
    touched.extend(docs);
    Ok(out(200, json!({"result": "OK"})))
}

enum Change {
    /// (add, remove)
    Tags(Vec<i64>, Vec<i64>),
    Correspondent(Option<i64>),
    DocumentType(Option<i64>),
}

/// Validates a bulk_edit method's parameters (Paperless's messages) into the change to apply.
fn bulk_change(st: &State, method: &str, p: &Map<String, Value>) -> Result<Change, String> {
    let given = |key: &str| p.get(key).ok_or(format!("{key} not specified"));
    let tag = || -> Result<i64, String> {
        let t = given("tag")?.as_i64().filter(|t| st.tags.contains_key(t));
        t.ok_or_else(|| "Tag does not exist".into())
    };
    let tags = |key: &str| -> Result<Vec<i64>, String> {
        id_list(given(key)?, |t| st.tags.contains_key(t)).ok_or(format!(
            "Some tags in {key} don't exist or were specified twice."
        ))
    };
    let relation = |key: &str, kind: Kind, label: &str| -> Result<Option<i64>, String> {
        match given(key)? {
            Value::Null => Ok(None),
            v => v
                .as_i64()
                .filter(|id| st.objects(kind).contains_key(id))
                .map(Some)
                .ok_or(format!("{label} does not exist")),
        }
    };
    Ok(match method {
        "add_tag" => Change::Tags(vec![tag()?], vec![]),
        "remove_tag" => Change::Tags(vec![], vec![tag()?]),
        "modify_tags" => Change::Tags(tags("add_tags")?, tags("remove_tags")?),
        "set_correspondent" => Change::Correspondent(relation(
            "correspondent",
            Kind::Correspondent,
            "Correspondent",
        )?),
        _ => Change::DocumentType(relation(
            "document_type",
            Kind::DocumentType,
            "Document type",
        )?),
    })
}

/// POST: 201 with the new object. Unique per (exact name, owner); the owner is the token's
/// user unless the body names one (`null` = shared).
pub(super) fn create_object(st: &mut State, req: &Req, kind: Kind) -> Result<Out, Out> {
    let body = json_object(req)?;
    let mut errors = Map::new();
    let name = match body.get("name").map(|v| char_field(v, Some(NAME_MAX))) {
        None => Err("This field is required.".to_owned()),
        Some(Ok(n)) if n.is_empty() => Err("This field may not be blank.".to_owned()),
        Some(r) => r,
    };
    let name = name.unwrap_or_else(|e| {
        errors.insert("name".into(), json!([e]));
        String::new()
    });
    let algorithm = body.get("matching_algorithm");
    let algorithm = algorithm.map_or(Some(1), |v| v.as_i64().filter(|m| (0..=6).contains(m)));
    if algorithm.is_none() {
        let e = invalid_choice(&body["matching_algorithm"]);
        errors.insert("matching_algorithm".into(), json!([e]));
    }
    let owner = match body.get("owner") {
        None => Some(USER),
        Some(Value::Null) => None,
        Some(v) => v.as_i64().or_else(|| {
            errors.insert("owner".into(), json!([not_a_pk(v)]));
            None
        }),
    };
    reject(errors)?;
    if st
        .objects(kind)
        .values()
        .any(|o| o.name == name && o.owner == owner)
    {
        // A plain string, not DRF's usual list: what 3.0.5 answers.
        let e = "Object violates owner / name unique constraint";
        return Err(out(400, json!({ "error": e })));
    }
    let id = st.take_id();
    let matching_algorithm = algorithm.unwrap_or(1);
    let obj = Obj {
        id,
        name,
        owner,
        matching_algorithm,
    };
    st.objects_mut(kind).insert(id, obj.clone());
    let mut v = obj_json(st, kind, &obj, false);
    // Echo the display settings sent; `Obj` does not keep them, so lists show the defaults.
    for key in ["color", "match", "is_insensitive", "is_inbox_tag"] {
        if let (Some(given), Some(slot)) = (body.get(key), v.get_mut(key)) {
            if std::mem::discriminant(given) == std::mem::discriminant(slot) {
                *slot = given.clone();
            }
        }
    }
    Ok(out(201, v))
}

/// DELETE: 204; documents lose the reference.
pub(super) fn delete_object(st: &mut State, kind: Kind, id: i64) -> Out {
    st.objects_mut(kind).remove(&id);
    for d in st.documents.values_mut() {
        match kind {
            Kind::Tag => d.tags.retain(|t| *t != id),
            Kind::Correspondent if d.correspondent == Some(id) => d.correspondent = None,
            Kind::DocumentType if d.document_type == Some(id) => d.document_type = None,
            _ => {}
        }
    }
    Out {
        status: 204,
        body: None,
    }
}

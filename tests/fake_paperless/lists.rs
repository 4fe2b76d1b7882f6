//! The read side of the fake: pagination, document filters and ordering, the list endpoints,
//! and documents / objects rendered as Paperless serialises them.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::*;

/// DRF's PageNumberPagination as Paperless configures it (25 per page, `page_size` ≤ 100000,
/// absolute links from the Host header, `all` ids for API version 9).
fn paginate(req: &Req, version: u8, items: Vec<Value>, ids: Vec<i64>, is_tags: bool) -> Out {
    let count = items.len();
    let size = req
        .param("page_size")
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .map_or(25, |n| n.min(100_000));
    let pages = count.div_ceil(size).max(1);
    let page = match req.param("page") {
        None | Some("") => 1,
        Some("last") => pages,
        Some(p) => match p.parse::<usize>() {
            Ok(n) if (1..=pages).contains(&n) => n,
            _ => return detail(404, "Invalid page."),
        },
    };
    let results: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * size)
        .take(size)
        .collect();
    let next = (page < pages).then(|| page_link(req, Some(page + 1)));
    // The link back to page 1 carries no `page` at all.
    let previous = (page > 1).then(|| page_link(req, (page > 2).then_some(page - 1)));
    let mut m = Map::new();
    m.insert("count".into(), json!(count));
    m.insert("next".into(), json!(next));
    m.insert("previous".into(), json!(previous));
    if version < 10 {
        m.insert("all".into(), json!(ids));
    }
    m.insert("results".into(), Value::Array(results));
    if is_tags {
        m.insert("display_count".into(), json!(count));
    }
    out(200, Value::Object(m))
}

/// The request's URL with another `page`; DRF re-encodes the query sorted by key.
fn page_link(req: &Req, page: Option<usize>) -> String {
    let mut q: Vec<(String, String)> = req
        .query
        .iter()
        .filter(|(k, _)| k != "page")
        .cloned()
        .collect();
    if let Some(p) = page {
        q.push(("page".into(), p.to_string()));
    }
    q.sort_by(|a, b| a.0.cmp(&b.0));
    let query: Vec<String> = q
        .iter()
        .map(|(k, v)| format!("{}={}", quote(k, true), quote(v, true)))
        .collect();
    let base = format!("http://{}{}", req.host(), req.path);
    if query.is_empty() {
        base
    } else {
        format!("{base}?{}", query.join("&"))
    }
}

/// Python's `quote_plus` (`plus`) or `quote(s, safe="/")`.
pub(super) fn quote(s: &str, plus: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(b as char)
            }
            b' ' if plus => out.push('+'),
            b'/' if !plus => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn int_list(s: &str) -> Vec<i64> {
    s.split(',').filter_map(|x| x.trim().parse().ok()).collect()
}

fn truthy(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// The filters of Paperless's DocumentFilterSet the clients use; unknown ones are ignored
/// (as django-filter does).
fn doc_matches(d: &Doc, req: &Req) -> bool {
    let has = |t: &i64| d.tags.contains(t);
    let icontains = |hay: &str, needle: &str| hay.to_lowercase().contains(&needle.to_lowercase());
    req.query.iter().all(|(k, v)| {
        v.is_empty()
            || match k.as_str() {
                "tags__id__none" => !int_list(v).iter().any(has),
                "tags__id__all" => int_list(v).iter().all(has),
                "tags__id__in" => int_list(v).iter().any(has),
                "tags__id" => int_list(v).iter().all(has),
                "is_tagged" => truthy(v).is_none_or(|t| t != d.tags.is_empty()),
                "title__icontains" => icontains(&d.title, v),
                "content__icontains" => icontains(&d.content, v),
                "id__in" => int_list(v).contains(&d.id),
                "id" => v.parse() == Ok(d.id),
                "correspondent__id" => v.parse().ok() == d.correspondent,
                "document_type__id" => v.parse().ok() == d.document_type,
                "correspondent__isnull" => truthy(v).is_none_or(|n| n == d.correspondent.is_none()),
                "document_type__isnull" => truthy(v).is_none_or(|n| n == d.document_type.is_none()),
                _ => true,
            }
    })
}

/// `ordering=` (default `-created`), ties broken by id in the same direction.
fn sort_documents(docs: &mut [&Doc], ordering: Option<&str>) {
    let ordering = ordering.unwrap_or("-created");
    let (desc, field) = match ordering.strip_prefix('-') {
        Some(f) => (true, f),
        None => (false, ordering),
    };
    let key = |d: &Doc| match field {
        "added" => d.added.clone(),
        "modified" => d.modified.clone(),
        "title" => d.title.to_lowercase(),
        "id" => String::new(),
        _ => d.created.clone(),
    };
    docs.sort_by(|a, b| {
        let o = key(a).cmp(&key(b)).then(a.id.cmp(&b.id));
        if desc {
            o.reverse()
        } else {
            o
        }
    });
}

pub(super) fn list_documents(st: &State, req: &Req, version: u8) -> Out {
    let mut docs: Vec<&Doc> = st
        .documents
        .values()
        .filter(|d| doc_matches(d, req))
        .collect();
    sort_documents(&mut docs, req.param("ordering"));
    let fields: Option<Vec<&str>> = req
        .param("fields")
        .map(|f| f.split(',').map(str::trim).collect());
    let ids = docs.iter().map(|d| d.id).collect();
    let items = docs
        .iter()
        .map(|d| {
            let v = doc_json(st, d, Shape::List);
            match &fields {
                // `?fields=` keeps the listed keys, in the serializer's order.
                Some(keep) => Value::Object(
                    v.as_object()
                        .expect("object")
                        .iter()
                        .filter(|(k, _)| keep.contains(&k.as_str()))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                ),
                None => v,
            }
        })
        .collect();
    paginate(req, version, items, ids, false)
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Shape {
    List,
    Get,
    Patch,
}

fn object(pairs: Vec<(&str, Value)>) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// A document as Paperless serialises it. Only a single GET lists duplicates (documents with
/// the same content); the PATCH answer has `permissions` instead of the two "can" flags.
pub(super) fn doc_json(st: &State, d: &Doc, shape: Shape) -> Value {
    let duplicates: Vec<Value> = match shape {
        Shape::Get => st
            .documents
            .values()
            .filter(|o| o.id != d.id && o.content == d.content)
            .map(|o| json!({"id": o.id, "title": o.title, "deleted_at": null}))
            .collect(),
        _ => Vec::new(),
    };
    let mime = if d.original_file_name.to_lowercase().ends_with(".pdf") {
        "application/pdf"
    } else {
        "text/plain"
    };
    let checksum = format!("{:x}", Sha256::digest(d.content.as_bytes()));
    let mut pairs = vec![
        ("id", json!(d.id)),
        ("correspondent", json!(d.correspondent)),
        ("document_type", json!(d.document_type)),
        ("storage_path", Value::Null),
        ("title", json!(d.title)),
        ("content", json!(d.content)),
        ("tags", json!(d.tags)),
        ("created", json!(d.created)),
        ("created_date", json!(d.created)),
        ("modified", json!(d.modified)),
        ("added", json!(d.added)),
        ("deleted_at", Value::Null),
        ("archive_serial_number", Value::Null),
        ("original_file_name", json!(d.original_file_name)),
        ("archived_file_name", Value::Null),
        ("duplicate_documents", json!(duplicates)),
        ("owner", json!(d.owner)),
    ];
    if shape == Shape::Patch {
        let nobody = json!({"users": [], "groups": []});
        pairs.push(("permissions", json!({"view": nobody, "change": nobody})));
    } else {
        pairs.push(("user_can_change", json!(true)));
        pairs.push(("is_shared_by_requester", json!(false)));
    }
    pairs.extend([
        ("notes", json!([])),
        ("custom_fields", json!([])),
        ("page_count", Value::Null),
        ("mime_type", json!(mime)),
        ("root_document", Value::Null),
        (
            "versions",
            json!([{"id": d.id, "added": d.added, "version_label": null,
                    "checksum": checksum, "is_root": true}]),
        ),
    ]);
    object(pairs)
}

/// Django's `slugify`, minus the transliteration of accented letters (they are dropped).
fn slugify(name: &str) -> String {
    let mut out = String::new();
    for c in name.to_lowercase().chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        } else if (c == '-' || c.is_whitespace()) && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches(['-', '_']).to_owned()
}

/// A tag / correspondent / document type as listed (`with_count`) or as created.
pub(super) fn obj_json(st: &State, kind: Kind, o: &Obj, with_count: bool) -> Value {
    let mut pairs = vec![
        ("id", json!(o.id)),
        ("slug", json!(slugify(&o.name))),
        ("name", json!(o.name)),
    ];
    if kind == Kind::Tag {
        pairs.push(("color", json!("#a6cee3")));
        pairs.push(("text_color", json!("#000000")));
    }
    pairs.push(("match", json!("")));
    pairs.push(("matching_algorithm", json!(o.matching_algorithm)));
    pairs.push(("is_insensitive", json!(true)));
    if kind == Kind::Tag {
        pairs.push(("is_inbox_tag", json!(false)));
    }
    if with_count {
        pairs.push(("document_count", json!(st.document_count(kind, o.id))));
    }
    pairs.push(("owner", json!(o.owner)));
    pairs.push(("user_can_change", json!(true)));
    if kind == Kind::Tag {
        pairs.push(("parent", Value::Null));
        pairs.push(("children", json!([])));
    }
    object(pairs)
}

pub(super) fn list_objects(st: &mut State, req: &Req, version: u8, kind: Kind) -> Out {
    let is_tags = kind == Kind::Tag;
    if let Some(name) = req.param("name__iexact") {
        let wanted = name.to_lowercase();
        if let Some(i) = st
            .stale_lookups
            .iter()
            .position(|s| s.to_lowercase() == wanted)
        {
            // The race: the other client's object is not visible to this first lookup.
            st.stale_lookups.remove(i);
            return paginate(req, version, Vec::new(), Vec::new(), is_tags);
        }
    }
    let matches = |o: &Obj| {
        req.query.iter().all(|(k, v)| match k.as_str() {
            // Unicode-aware, like the database's case folding for `iexact`.
            "name__iexact" => o.name.to_lowercase() == v.to_lowercase(),
            "name__icontains" => o.name.to_lowercase().contains(&v.to_lowercase()),
            "id__in" => v.is_empty() || int_list(v).contains(&o.id),
            "id" => v.is_empty() || v.parse() == Ok(o.id),
            _ => true,
        })
    };
    let mut objs: Vec<&Obj> = st.objects(kind).values().filter(|o| matches(o)).collect();
    objs.sort_by_key(|o| (o.name.to_lowercase(), o.id));
    let ids = objs.iter().map(|o| o.id).collect();
    let items = objs.iter().map(|o| obj_json(st, kind, o, true)).collect();
    paginate(req, version, items, ids, is_tags)
}

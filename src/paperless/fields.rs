//! Custom fields: an instance's field definitions as Paperless sends them, the JSON Schema
//! that makes a model's value valid for a field's `data_type` by construction, and the value
//! Paperless stores (checked by the rules its serializer applies,
//! `CustomFieldInstanceSerializer.validate` in Paperless-ngx 3.0.5).

use chrono::NaiveDate;
use serde_json::{json, Value};

/// Why a field definition or a value cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FieldError {
    #[error("custom field definition: {0}")]
    Definition(String),
    #[error("custom field {field:?}: {msg}")]
    Value { field: String, msg: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectOption {
    pub id: String,
    pub label: String,
}

/// Paperless's `data_type`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataType {
    String,
    LongText,
    Url,
    Date,
    Boolean,
    Integer,
    Float,
    /// `EUR123.45`; `default_currency` from `extra_data` when the instance sets one.
    Monetary {
        default_currency: Option<String>,
    },
    Select(Vec<SelectOption>),
    /// Links to other documents: nothing a document's text states, so never extracted.
    DocumentLink,
}

/// A field definition; read and written as Paperless's `/api/custom_fields/` objects.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "Value", into = "Value")]
pub struct CustomField {
    pub id: i64,
    pub name: String,
    pub data_type: DataType,
}

impl TryFrom<Value> for CustomField {
    type Error = FieldError;
    fn try_from(v: Value) -> Result<Self, FieldError> {
        CustomField::from_paperless(&v)
    }
}

impl From<CustomField> for Value {
    fn from(f: CustomField) -> Value {
        let (data_type, extra) = match &f.data_type {
            DataType::String => ("string", Value::Null),
            DataType::LongText => ("longtext", Value::Null),
            DataType::Url => ("url", Value::Null),
            DataType::Date => ("date", Value::Null),
            DataType::Boolean => ("boolean", Value::Null),
            DataType::Integer => ("integer", Value::Null),
            DataType::Float => ("float", Value::Null),
            DataType::Monetary { default_currency } => {
                ("monetary", json!({ "default_currency": default_currency }))
            }
            DataType::Select(options) => (
                "select",
                json!({"select_options": options.iter()
                    .map(|o| json!({"id": o.id, "label": o.label})).collect::<Vec<_>>()}),
            ),
            DataType::DocumentLink => ("documentlink", Value::Null),
        };
        json!({"id": f.id, "name": f.name, "data_type": data_type, "extra_data": extra})
    }
}

/// Paperless keeps integers in a PostgreSQL `integer`.
const INT_RANGE: (i64, i64) = (-2_147_483_648, 2_147_483_647);
/// `DecimalValidator(max_digits=12, decimal_places=2)`: ten digits before the point.
const MONETARY_PATTERN: &str = "^[A-Z]{3}-?[0-9]{1,10}\\.[0-9]{2}$";
const STRING_MAX: usize = 128;
/// Long text has no limit in Paperless; a value the model writes is kept to a paragraph.
const LONGTEXT_MAX: usize = 2000;

impl CustomField {
    /// One entry of `GET /api/custom_fields/`.
    pub fn from_paperless(v: &Value) -> Result<Self, FieldError> {
        let bad = |m: &str| FieldError::Definition(format!("{m}: {v}"));
        let id = v["id"].as_i64().ok_or_else(|| bad("no id"))?;
        let name = v["name"].as_str().ok_or_else(|| bad("no name"))?.to_owned();
        let extra = &v["extra_data"];
        let data_type = match v["data_type"].as_str().ok_or_else(|| bad("no data_type"))? {
            "string" => DataType::String,
            "longtext" => DataType::LongText,
            "url" => DataType::Url,
            "date" => DataType::Date,
            "boolean" => DataType::Boolean,
            "integer" => DataType::Integer,
            "float" => DataType::Float,
            "monetary" => DataType::Monetary {
                default_currency: extra["default_currency"]
                    .as_str()
                    .filter(|c| c.len() == 3)
                    .map(str::to_owned),
            },
            "select" => DataType::Select(
                extra["select_options"]
                    .as_array()
                    .ok_or_else(|| bad("a select field without select_options"))?
                    .iter()
                    .map(|o| match (o["id"].as_str(), o["label"].as_str()) {
                        (Some(id), Some(label)) => Ok(SelectOption {
                            id: id.to_owned(),
                            label: label.to_owned(),
                        }),
                        _ => Err(bad("a select option without id or label")),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            "documentlink" => DataType::DocumentLink,
            other => return Err(bad(&format!("unknown data_type {other:?}"))),
        };
        Ok(Self {
            id,
            name,
            data_type,
        })
    }

    /// The schema of this field's value in the model's answer: a value valid for the field, or
    /// `null` when the document does not state one. A date may only be one of `dates` (the
    /// dates found in the text). `None` for fields that are never extracted.
    pub fn value_schema(&self, dates: &[NaiveDate]) -> Option<Value> {
        let nullable = |s: Value| json!({"anyOf": [s, {"type": "null"}]});
        Some(match &self.data_type {
            DataType::String => {
                nullable(json!({"type": "string", "minLength": 1, "maxLength": STRING_MAX}))
            }
            DataType::LongText => {
                nullable(json!({"type": "string", "minLength": 1, "maxLength": LONGTEXT_MAX}))
            }
            DataType::Url => {
                nullable(json!({"type": "string", "pattern": "^https?://[^ \\t\\n\"]{1,200}$"}))
            }
            DataType::Date if dates.is_empty() => json!({"type": "null"}),
            DataType::Date => {
                let days: Vec<String> = dates.iter().map(|d| d.to_string()).collect();
                nullable(json!({"enum": days}))
            }
            DataType::Boolean => json!({"type": ["boolean", "null"]}),
            DataType::Integer => {
                nullable(json!({"type": "integer", "minimum": INT_RANGE.0, "maximum": INT_RANGE.1}))
            }
            DataType::Float => {
                nullable(json!({"type": "number", "minimum": -1e12, "maximum": 1e12}))
            }
            DataType::Monetary { .. } => {
                nullable(json!({"type": "string", "pattern": MONETARY_PATTERN}))
            }
            DataType::Select(options) => {
                let labels: Vec<&str> = options.iter().map(|o| o.label.as_str()).collect();
                nullable(json!({"enum": labels}))
            }
            DataType::DocumentLink => return None,
        })
    }

    /// A value as Paperless stores it, as the classifier names it: a select option's id
    /// becomes its label (an unknown id, null); other values stay as they are.
    pub fn value_from_paperless(&self, v: &Value) -> Value {
        match (&self.data_type, v.as_str()) {
            (DataType::Select(options), Some(id)) => options
                .iter()
                .find(|o| o.id == id)
                .map_or(Value::Null, |o| json!(o.label)),
            _ => v.clone(),
        }
    }

    /// The model's value as Paperless stores it (`null` stays `null`): a select label becomes
    /// its option's id; everything is checked as Paperless's serializer checks it, so a write
    /// never fails validation and nothing outside the field's rules is ever sent.
    pub fn to_paperless(&self, v: &Value) -> Result<Value, FieldError> {
        let bad = |msg: String| FieldError::Value {
            field: self.name.clone(),
            msg,
        };
        if v.is_null() {
            return Ok(Value::Null);
        }
        let text = || v.as_str().ok_or_else(|| bad(format!("{v} is not text")));
        match &self.data_type {
            DataType::String | DataType::LongText => {
                let s = text()?;
                if matches!(self.data_type, DataType::String) && s.chars().count() > STRING_MAX {
                    return Err(bad(format!("longer than {STRING_MAX} characters")));
                }
                Ok(json!(s))
            }
            DataType::Url => {
                let s = text()?;
                let ok = (s.starts_with("http://") || s.starts_with("https://"))
                    && !s.contains(char::is_whitespace);
                ok.then(|| json!(s))
                    .ok_or_else(|| bad(format!("{s:?} is not a URL")))
            }
            DataType::Date => {
                let s = text()?;
                NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .map(|d| json!(d.to_string()))
                    .map_err(|_| bad(format!("{s:?} is not a date (YYYY-MM-DD)")))
            }
            DataType::Boolean => v
                .as_bool()
                .map(Value::Bool)
                .ok_or_else(|| bad(format!("{v} is not true or false"))),
            DataType::Integer => v
                .as_i64()
                .filter(|n| (INT_RANGE.0..=INT_RANGE.1).contains(n))
                .map(|n| json!(n))
                .ok_or_else(|| bad(format!("{v} is not a 32-bit integer"))),
            DataType::Float => v
                .as_f64()
                .filter(|f| f.is_finite())
                .map(|f| json!(f))
                .ok_or_else(|| bad(format!("{v} is not a number"))),
            DataType::Monetary { .. } => {
                let s = text()?;
                monetary_ok(s)
                    .then(|| json!(s))
                    .ok_or_else(|| bad(format!("{s:?} is not an amount like EUR123.45")))
            }
            DataType::Select(options) => {
                let s = text()?;
                options
                    .iter()
                    .find(|o| o.label == s)
                    .map(|o| json!(o.id))
                    .ok_or_else(|| bad(format!("{s:?} is not one of the options")))
            }
            DataType::DocumentLink => Err(bad("document links are not extracted".into())),
        }
    }
}

/// The field called `name`: the exact spelling first, else ignoring case.
pub fn by_name<'a>(defs: &'a [CustomField], name: &str) -> Option<&'a CustomField> {
    super::types::named(defs, name, |f| &f.name)
}

/// The fields called `names`, in that order, each once; the first name `defs` lacks is the
/// error. What a request or the command line asks for.
pub fn select(defs: &[CustomField], names: &[&str]) -> Result<Vec<CustomField>, String> {
    let mut out: Vec<CustomField> = Vec::new();
    for name in names {
        let f = by_name(defs, name).ok_or_else(|| (*name).to_owned())?;
        if !out.contains(f) {
            out.push(f.clone());
        }
    }
    Ok(out)
}

/// Paperless's monetary rule (`^[A-Z]{3}-?\d+(\.\d{1,2})$`, at most 12 digits), as the schema
/// writes it: always two decimals.
fn monetary_ok(s: &str) -> bool {
    let Some(rest) = s.get(3..) else { return false };
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let Some((whole, cents)) = rest.split_once('.') else {
        return false;
    };
    s[..3].bytes().all(|b| b.is_ascii_uppercase())
        && (1..=10).contains(&whole.len())
        && whole.bytes().all(|b| b.is_ascii_digit())
        && cents.len() == 2
        && cents.bytes().all(|b| b.is_ascii_digit())
}

/// IBAN lengths by country (the SWIFT IBAN registry), for the countries whose accounts a
/// household in Europe meets; an IBAN of another country counts when its whole run checks.
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AT", 20),
    ("BE", 16),
    ("BG", 22),
    ("CH", 21),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("EE", 20),
    ("ES", 24),
    ("FI", 18),
    ("FR", 27),
    ("GB", 22),
    ("GR", 27),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IS", 26),
    ("IT", 27),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("MC", 27),
    ("MT", 31),
    ("NL", 18),
    ("NO", 15),
    ("PL", 28),
    ("PT", 25),
    ("RO", 24),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("TR", 26),
];

/// IBANs the text states (spaces allowed between groups, as they are printed), each with a
/// valid ISO 13616 check (mod 97), without spaces: the candidates a model may choose from.
pub fn iban_candidates(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    for start in 0..chars.len() {
        let is_start = chars[start].is_ascii_uppercase()
            && chars.get(start + 1).is_some_and(char::is_ascii_uppercase)
            && (start == 0 || !chars[start - 1].is_ascii_alphanumeric());
        if !is_start {
            continue;
        }
        let country: String = chars[start..start + 2].iter().collect();
        let want = IBAN_LENGTHS
            .iter()
            .find(|(c, _)| *c == country)
            .map(|(_, n)| *n);
        // Up to the country's length (34 at most), single spaces between groups.
        let mut iban = String::new();
        let mut i = start;
        while i < chars.len() && iban.len() < want.unwrap_or(34) {
            match chars[i] {
                c if c.is_ascii_alphanumeric() => iban.push(c.to_ascii_uppercase()),
                ' ' if chars.get(i + 1).is_some_and(char::is_ascii_alphanumeric) => {}
                _ => break,
            }
            i += 1;
        }
        // The IBAN ends there: the next character may not continue it.
        let ends = chars.get(i).is_none_or(|c| !c.is_ascii_alphanumeric());
        let complete = match want {
            Some(n) => iban.len() == n && ends,
            None => ends,
        };
        if complete && iban_valid(&iban) && !out.contains(&iban) {
            out.push(iban);
        }
    }
    out
}

/// ISO 13616: two letters, two check digits, then the account; mod 97 of the rearranged
/// number is 1.
fn iban_valid(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 15
        || b.len() > 34
        || !b[..2].iter().all(u8::is_ascii_uppercase)
        || !b[2..4].iter().all(u8::is_ascii_digit)
        || !b.iter().all(u8::is_ascii_alphanumeric)
    {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in b[4..].iter().chain(&b[..4]) {
        let v = if c.is_ascii_digit() {
            u32::from(c - b'0')
        } else {
            u32::from(c.to_ascii_uppercase() - b'A') + 10
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(data_type: &str, extra: Value) -> CustomField {
        CustomField::from_paperless(&json!({"id": 3, "name": "F", "data_type": data_type,
                                            "extra_data": extra}))
        .unwrap()
    }

    #[test]
    fn definitions_parse_as_paperless_sends_them() {
        let f = field(
            "select",
            json!({"select_options": [{"id": "a1", "label": "open"}, {"id": "b2", "label": "paid"}]}),
        );
        assert_eq!(f.to_paperless(&json!("paid")), Ok(json!("b2")));
        assert!(f.to_paperless(&json!("b2")).is_err(), "labels, not ids");
        let m = field("monetary", json!({"default_currency": "EUR"}));
        assert_eq!(
            m.data_type,
            DataType::Monetary {
                default_currency: Some("EUR".into())
            }
        );
        assert!(
            CustomField::from_paperless(&json!({"id": 1, "name": "x", "data_type": "blob"}))
                .is_err()
        );
        assert!(field("documentlink", Value::Null)
            .value_schema(&[])
            .is_none());
    }

    /// Whatever the schema lets the model write, Paperless's own rules accept.
    #[test]
    fn values_valid_for_the_schema_are_valid_for_paperless() {
        let date = NaiveDate::from_ymd_opt(2024, 3, 12).unwrap();
        let cases: Vec<(CustomField, Vec<Value>, Vec<Value>)> = vec![
            (
                field("monetary", Value::Null),
                vec![
                    json!("EUR144.34"),
                    json!("CHF-5.00"),
                    json!("USD1234567890.99"),
                ],
                vec![
                    json!("144,34 EUR"),
                    json!("EUR144.3"),
                    json!("eur1.00"),
                    json!(144.34),
                ],
            ),
            (
                field("integer", Value::Null),
                vec![json!(7), json!(-2_147_483_648i64)],
                vec![json!(2_147_483_648i64), json!(1.5), json!("7")],
            ),
            (
                field("date", Value::Null),
                vec![json!("2024-03-12")],
                vec![json!("2024-02-30"), json!("12.03.2024")],
            ),
            (
                field("url", Value::Null),
                vec![json!("https://example.org/a?b=1")],
                vec![json!("example.org"), json!("https://a b")],
            ),
            (
                field("string", Value::Null),
                vec![json!("RE-2024-0815")],
                vec![json!("x".repeat(129)), json!("")],
            ),
            (
                field("boolean", Value::Null),
                vec![json!(true)],
                vec![json!("yes")],
            ),
        ];
        for (f, good, bad) in cases {
            let schema = f.value_schema(&[date]).unwrap();
            let v = jsonschema::validator_for(&schema).unwrap();
            assert!(v.is_valid(&Value::Null), "null always: {schema}");
            for g in &good {
                assert!(v.is_valid(g), "{:?} schema takes {g}", f.data_type);
                assert!(
                    f.to_paperless(g).is_ok(),
                    "{:?} Paperless takes {g}",
                    f.data_type
                );
            }
            for b in &bad {
                assert!(!v.is_valid(b), "{:?} schema refuses {b}", f.data_type);
            }
        }
        // A date field offers only the dates in the text.
        let d = field("date", Value::Null);
        assert_eq!(d.value_schema(&[]).unwrap(), json!({"type": "null"}));
        let v = jsonschema::validator_for(&d.value_schema(&[date]).unwrap()).unwrap();
        assert!(!v.is_valid(&json!("2024-03-13")));
    }

    #[test]
    fn ibans_come_from_the_text_with_a_valid_check() {
        let text = "Bitte überweisen Sie auf IBAN DE89 3704 0044 0532 0130 00 bei der Bank. \
                    Alte Verbindung: DE89 3704 0044 0532 0130 01 (ungültig). \
                    GB82WEST12345698765432, nochmals DE89370400440532013000. \
                    Zu lang: DE89370400440532013000123.";
        assert_eq!(
            iban_candidates(text),
            vec!["DE89370400440532013000", "GB82WEST12345698765432"]
        );
        assert!(iban_candidates("DEAR Sir, INVOICE NO 123").is_empty());
    }
}

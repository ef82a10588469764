//! Schemas of event types and whether a new version may follow the old ones.
//!
//! The compatibility modes are the schema registries' (Confluent's documented meaning):
//! - `BACKWARD`: consumers using the new schema can read data written with the previous one;
//! - `FORWARD`: consumers using the previous schema can read data written with the new one;
//! - `FULL`: both;
//! - each `_TRANSITIVE`: against every earlier version, not only the latest;
//! - `NONE`: no check.
//!
//! For JSON Schema, "a reader can read what a writer wrote" is decided structurally by
//! [`json_reader_accepts`]: every instance the writer's schema allows must be allowed by the
//! reader's. The rules, each a table test below:
//! - a type may widen (`integer` → `number`, one type → several), never narrow;
//! - an `enum` may gain values, never lose them (nor appear where there was none);
//! - a property the reader requires must be required by the writer (adding a required
//!   property is not backward compatible; adding an optional one is);
//! - a property the writer may write is read with the reader's schema for it: its own, or
//!   `additionalProperties` (a closed reader, `additionalProperties: false`, cannot read a
//!   property it dropped);
//!   a property only the reader declares is taken as not written by the writer (as the
//!   registries treat an optional field added to an open content model);
//! - bounds (`maximum`, `minimum`, `maxLength`, `minLength`, `maxItems`, `minItems`) may loosen,
//!   never tighten; array `items` and nested objects are compared the same way;
//! - composition and references (`$ref`, `allOf`, `anyOf`, `oneOf`, `not`, `if`, …) are not
//!   reasoned about: a change under one is reported as one Herald cannot prove compatible.
//!
//! Pure: no I/O, no clock.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a new schema version must relate to the earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compatibility {
    /// No check.
    None,
    /// New readers read the latest earlier version's data.
    #[default]
    Backward,
    /// New readers read every earlier version's data.
    BackwardTransitive,
    /// The latest earlier version's readers read new data.
    Forward,
    /// Every earlier version's readers read new data.
    ForwardTransitive,
    /// Backward and forward against the latest earlier version.
    Full,
    /// Backward and forward against every earlier version.
    FullTransitive,
}

impl Compatibility {
    /// Every mode, in the registries' order.
    pub const ALL: [Compatibility; 7] = [
        Compatibility::None,
        Compatibility::Backward,
        Compatibility::BackwardTransitive,
        Compatibility::Forward,
        Compatibility::ForwardTransitive,
        Compatibility::Full,
        Compatibility::FullTransitive,
    ];

    /// Its name: `BACKWARD_TRANSITIVE`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Compatibility::None => "NONE",
            Compatibility::Backward => "BACKWARD",
            Compatibility::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Compatibility::Forward => "FORWARD",
            Compatibility::ForwardTransitive => "FORWARD_TRANSITIVE",
            Compatibility::Full => "FULL",
            Compatibility::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// (new reads old, old reads new, against all earlier versions).
    const fn checks(self) -> (bool, bool, bool) {
        match self {
            Compatibility::None => (false, false, false),
            Compatibility::Backward => (true, false, false),
            Compatibility::BackwardTransitive => (true, false, true),
            Compatibility::Forward => (false, true, false),
            Compatibility::ForwardTransitive => (false, true, true),
            Compatibility::Full => (true, true, false),
            Compatibility::FullTransitive => (true, true, true),
        }
    }
}

impl fmt::Display for Compatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compatibility {
    type Err = String;

    fn from_str(s: &str) -> Result<Compatibility, String> {
        Compatibility::ALL.into_iter().find(|c| c.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| {
            format!("compatibility {s:?} is not one of {}", Compatibility::ALL.map(Compatibility::as_str).join(", "))
        })
    }
}

/// What a topic does with an event whose type has no schema registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownTypes {
    /// Stored unchecked (the default: a topic without schemas takes anything).
    #[default]
    Allow,
    /// Refused with `schema_invalid`.
    Refuse,
}

/// A topic's schema settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchemaPolicy {
    /// Events of a type without a schema.
    pub unknown_types: UnknownTypes,
    /// The compatibility rule of a type that does not set its own.
    pub compatibility: Compatibility,
}

/// The schema formats Herald validates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaFormat {
    /// JSON Schema, draft 2020-12.
    #[default]
    JsonSchema,
}

/// One registered version of an event type's schema.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SchemaVersion {
    /// The topic.
    pub topic: String,
    /// The CloudEvents `type` it describes.
    #[serde(rename = "type")]
    pub ty: String,
    /// 1, 2, …
    pub version: u32,
    /// Its format.
    pub format: SchemaFormat,
    /// The schema document.
    pub schema: Value,
    /// When it was registered, ms since the Unix epoch.
    pub registered_ms: i64,
    /// The rule the type's next version must follow.
    pub compatibility: Compatibility,
    /// What valid events are stamped with as their `dataschema`.
    pub dataschema: String,
}

/// The `dataschema` of events validated against `version` of `ty`'s schema on `topic`: a
/// `herald:` URI whose path is that version's in the HTTP API (`herald:/v1/topics/orders/
/// schemas/order.placed/versions/2`).
pub fn dataschema(topic: &str, ty: &str, version: u32) -> String {
    format!("herald:/v1/topics/{topic}/schemas/{}/versions/{version}", percent_encode(ty))
}

/// Percent-encodes what is not unreserved in a URI path segment.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Most event types with a schema on one topic.
pub const TYPES_MAX: usize = 1_000;
/// Most versions of one type's schema.
pub const VERSIONS_MAX: usize = 1_000;
/// Largest schema document, in bytes of JSON.
pub const SCHEMA_BYTES_MAX: usize = 256 * 1024;

/// One reason a schema version may not follow another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Incompatibility {
    /// The rule broken: `BACKWARD` (new readers, old data) or `FORWARD` (old readers, new data).
    pub rule: &'static str,
    /// The earlier version compared with.
    pub version: u32,
    /// Where in the schema (a JSON pointer into the reader's schema: `/properties/total`).
    pub path: String,
    /// What changed, in words.
    pub message: String,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} against version {}: at {}: {}", self.rule, self.version, self.path_or_root(), self.message)
    }
}

impl Incompatibility {
    fn path_or_root(&self) -> &str {
        if self.path.is_empty() { "the root" } else { &self.path }
    }
}

/// A problem found by [`json_reader_accepts`]: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// JSON pointer into the reader's schema.
    pub path: String,
    /// What the writer may produce that the reader refuses.
    pub message: String,
}

/// Whether `new` (a JSON Schema) may follow `earlier` (oldest first, numbered from 1) under
/// `mode`; every incompatibility found when not.
pub fn check_json(mode: Compatibility, new: &Value, earlier: &[Value]) -> Result<(), Vec<Incompatibility>> {
    let (backward, forward, transitive) = mode.checks();
    let Some(latest) = earlier.len().checked_sub(1) else { return Ok(()) };
    let against: Vec<usize> = if transitive { (0..earlier.len()).collect() } else { vec![latest] };
    let mut found = Vec::new();
    for i in against {
        let version = i as u32 + 1;
        let mut add = |rule: &'static str, problems: Vec<Problem>| {
            found.extend(problems.into_iter().map(|p| Incompatibility {
                rule,
                version,
                path: p.path,
                message: p.message,
            }));
        };
        if backward {
            add("BACKWARD", json_reader_accepts(new, &earlier[i]));
        }
        if forward {
            add("FORWARD", json_reader_accepts(&earlier[i], new));
        }
    }
    if found.is_empty() { Ok(()) } else { Err(found) }
}

/// Keywords whose meaning depends on other schemas: not reasoned about.
const OPAQUE: &[&str] = &[
    "$ref",
    "$dynamicRef",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "dependentRequired",
    "patternProperties",
    "propertyNames",
    "prefixItems",
    "contains",
    "unevaluatedProperties",
    "unevaluatedItems",
    "pattern",
    "format",
    "const",
    "multipleOf",
    "uniqueItems",
];

/// What the writer's schema allows that the reader's does not (empty: the reader reads all the
/// writer may write, as far as the rules above can tell).
pub fn json_reader_accepts(reader: &Value, writer: &Value) -> Vec<Problem> {
    let mut out = Vec::new();
    accepts(reader, writer, "", &mut out);
    out
}

fn problem(out: &mut Vec<Problem>, path: &str, message: String) {
    out.push(Problem { path: path.to_owned(), message });
}

/// The types a schema allows (`None` = any), `integer` folded into `number` where both appear.
fn types(s: &Value) -> Option<BTreeSet<String>> {
    match s.get("type")? {
        Value::String(t) => Some([t.clone()].into()),
        Value::Array(ts) => Some(ts.iter().filter_map(Value::as_str).map(str::to_owned).collect()),
        _ => None,
    }
}

fn may_be(types: &Option<BTreeSet<String>>, t: &str) -> bool {
    types.as_ref().is_none_or(|ts| ts.contains(t) || (t == "integer" && ts.contains("number")))
}

fn accepts(reader: &Value, writer: &Value, path: &str, out: &mut Vec<Problem>) {
    // `true`/`{}` read anything; `false` reads nothing.
    match (reader, writer) {
        (Value::Bool(true), _) => return,
        (_, Value::Bool(false)) => return,
        (Value::Bool(false), _) => return problem(out, path, "the reader allows nothing here (false)".into()),
        (Value::Object(_), Value::Bool(true)) => {
            if reader.as_object().is_some_and(|o| !o.is_empty()) {
                problem(out, path, "the writer allowed anything here; the reader constrains it".into());
            }
            return;
        }
        _ => {}
    }
    for k in OPAQUE {
        if reader.get(k) != writer.get(k) {
            problem(
                out,
                &format!("{path}/{k}"),
                format!("{k} changed; Herald does not reason about {k}: check by hand, or register with NONE"),
            );
        }
    }
    let (rt, wt) = (types(reader), types(writer));
    match (&rt, &wt) {
        (Some(r), None) => {
            problem(out, &format!("{path}/type"), format!("the writer allowed any type; the reader only {}", list(r)))
        }
        (Some(r), Some(w)) => {
            let narrowed: Vec<&String> = w.iter().filter(|t| !may_be(&rt, t)).collect();
            if !narrowed.is_empty() {
                problem(out, &format!("{path}/type"), format!("type narrowed from {} to {}", list(w), list(r)));
            }
        }
        _ => {}
    }
    match (reader.get("enum").and_then(Value::as_array), writer.get("enum").and_then(Value::as_array)) {
        (Some(_), None) => problem(out, &format!("{path}/enum"), "an enum where the writer allowed any value".into()),
        (Some(r), Some(w)) => {
            for v in w.iter().filter(|v| !r.contains(v)) {
                problem(out, &format!("{path}/enum"), format!("enum value {v} removed"));
            }
        }
        _ => {}
    }
    for (key, tighter) in [("maximum", "lowered"), ("maxLength", "lowered"), ("maxItems", "lowered")] {
        bound(reader, writer, path, key, tighter, |r, w| r < w, out);
    }
    for (key, tighter) in [("minimum", "raised"), ("minLength", "raised"), ("minItems", "raised")] {
        bound(reader, writer, path, key, tighter, |r, w| r > w, out);
    }
    if may_be(&wt, "object") && may_be(&rt, "object") {
        objects(reader, writer, path, out);
    }
    if may_be(&wt, "array")
        && may_be(&rt, "array")
        && let Some(ri) = reader.get("items")
    {
        let wi = writer.get("items").unwrap_or(&Value::Bool(true));
        accepts(ri, wi, &format!("{path}/items"), out);
    }
}

fn bound(
    reader: &Value,
    writer: &Value,
    path: &str,
    key: &str,
    tighter: &str,
    is_tighter: impl Fn(f64, f64) -> bool,
    out: &mut Vec<Problem>,
) {
    let (r, w) = (reader.get(key).and_then(Value::as_f64), writer.get(key).and_then(Value::as_f64));
    match (r, w) {
        (Some(r), None) => problem(out, &format!("{path}/{key}"), format!("{key} {r} added")),
        (Some(r), Some(w)) if is_tighter(r, w) => {
            problem(out, &format!("{path}/{key}"), format!("{key} {tighter} from {w} to {r}"))
        }
        _ => {}
    }
}

fn objects(reader: &Value, writer: &Value, path: &str, out: &mut Vec<Problem>) {
    let empty = serde_json::Map::new();
    let props = |s: &Value| s.get("properties").and_then(Value::as_object).unwrap_or(&empty).clone();
    let required = |s: &Value| -> BTreeSet<String> {
        s.get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    let (rp, wp) = (props(reader), props(writer));
    let (rr, wr) = (required(reader), required(writer));
    for name in rr.difference(&wr) {
        let message = if wp.contains_key(name) {
            format!("property {name:?} became required (the writer may leave it out)")
        } else {
            format!("required property {name:?} added (the writer never wrote it)")
        };
        problem(out, &format!("{path}/required"), message);
    }
    let r_extra = reader.get("additionalProperties").unwrap_or(&Value::Bool(true));
    let w_extra = writer.get("additionalProperties").unwrap_or(&Value::Bool(true));
    for (name, ws) in &wp {
        let at = format!("{path}/properties/{}", pointer_escape(name));
        match rp.get(name) {
            Some(rs) => accepts(rs, ws, &at, out),
            None if *r_extra == Value::Bool(false) => {
                problem(out, &at, format!("property {name:?} removed, and the reader allows no other properties"))
            }
            None => accepts(r_extra, ws, &format!("{path}/additionalProperties"), out),
        }
    }
    if *w_extra != Value::Bool(false) && *r_extra != Value::Bool(true) {
        accepts(r_extra, w_extra, &format!("{path}/additionalProperties"), out);
    }
}

fn list(ts: &BTreeSet<String>) -> String {
    ts.iter().cloned().collect::<Vec<_>>().join("|")
}

/// A property name as a JSON pointer segment (RFC 6901).
fn pointer_escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order() -> Value {
        json!({
            "type": "object",
            "properties": {
                "id": { "type": "string" },
                "total": { "type": "integer", "minimum": 0 },
                "status": { "enum": ["new", "paid"] },
                "items": { "type": "array", "items": { "type": "object", "properties": { "sku": { "type": "string" } }, "required": ["sku"] } },
                "note": { "type": "string", "maxLength": 100 }
            },
            "required": ["id", "total"]
        })
    }

    /// `order()` changed by `f`.
    fn changed(f: impl FnOnce(&mut Value)) -> Value {
        let mut v = order();
        f(&mut v);
        v
    }

    /// (change, backward compatible, forward compatible, a path the problem names)
    fn cases() -> Vec<(&'static str, Value, bool, bool, &'static str)> {
        vec![
            ("nothing", order(), true, true, ""),
            (
                "optional property added",
                changed(|v| {
                    v["properties"]["coupon"] = json!({"type": "string"});
                }),
                true,
                true,
                "",
            ),
            (
                "required property added",
                changed(|v| {
                    v["properties"]["coupon"] = json!({"type": "string"});
                    v["required"] = json!(["id", "total", "coupon"]);
                }),
                false,
                true,
                "/required",
            ),
            (
                "optional property removed",
                changed(|v| {
                    v["properties"].as_object_mut().unwrap().remove("note");
                }),
                true,
                true,
                "",
            ),
            (
                "required property removed",
                changed(|v| {
                    v["properties"].as_object_mut().unwrap().remove("total");
                    v["required"] = json!(["id"]);
                }),
                true,
                false,
                "/required",
            ),
            (
                "optional property made required",
                changed(|v| {
                    v["required"] = json!(["id", "total", "note"]);
                }),
                false,
                true,
                "/required",
            ),
            (
                "type widened integer to number",
                changed(|v| {
                    v["properties"]["total"]["type"] = json!("number");
                }),
                true,
                false,
                "/properties/total/type",
            ),
            (
                "type changed integer to string",
                changed(|v| {
                    v["properties"]["total"]["type"] = json!("string");
                }),
                false,
                false,
                "/properties/total/type",
            ),
            (
                "enum value added",
                changed(|v| {
                    v["properties"]["status"]["enum"] = json!(["new", "paid", "shipped"]);
                }),
                true,
                false,
                "/properties/status/enum",
            ),
            (
                "enum value removed",
                changed(|v| {
                    v["properties"]["status"]["enum"] = json!(["new"]);
                }),
                false,
                true,
                "/properties/status/enum",
            ),
            (
                "nested required field added",
                changed(|v| {
                    v["properties"]["items"]["items"]["properties"]["qty"] = json!({"type": "integer"});
                    v["properties"]["items"]["items"]["required"] = json!(["sku", "qty"]);
                }),
                false,
                true,
                "/properties/items/items/required",
            ),
            (
                "nested type changed",
                changed(|v| {
                    v["properties"]["items"]["items"]["properties"]["sku"]["type"] = json!("integer");
                }),
                false,
                false,
                "/properties/items/items/properties/sku/type",
            ),
            (
                "maxLength lowered",
                changed(|v| {
                    v["properties"]["note"]["maxLength"] = json!(50);
                }),
                false,
                true,
                "/properties/note/maxLength",
            ),
            (
                "minimum raised",
                changed(|v| {
                    v["properties"]["total"]["minimum"] = json!(1);
                }),
                false,
                true,
                "/properties/total/minimum",
            ),
            (
                "content model closed",
                changed(|v| {
                    v["additionalProperties"] = json!(false);
                }),
                false,
                true,
                "/additionalProperties",
            ),
            (
                "$ref introduced",
                changed(|v| {
                    v["properties"]["note"] = json!({"$ref": "#/$defs/note"});
                }),
                false,
                false,
                "/properties/note/$ref",
            ),
        ]
    }

    #[test]
    fn json_schema_changes_follow_the_registries_rules() {
        for (what, new, backward, forward, path) in cases() {
            let old = order();
            let b = json_reader_accepts(&new, &old);
            let f = json_reader_accepts(&old, &new);
            assert_eq!(b.is_empty(), backward, "{what}: backward: {b:?}");
            assert_eq!(f.is_empty(), forward, "{what}: forward: {f:?}");
            if !path.is_empty() {
                assert!(b.iter().chain(&f).any(|p| p.path == path), "{what}: no problem at {path}: {b:?} {f:?}");
            }
            // Every mode, from the two directions.
            for mode in Compatibility::ALL {
                let (bw, fw, _) = mode.checks();
                let ok = (!bw || backward) && (!fw || forward);
                assert_eq!(check_json(mode, &new, std::slice::from_ref(&old)).is_ok(), ok, "{what} under {mode}");
            }
        }
    }

    #[test]
    fn a_closed_reader_cannot_read_a_property_it_dropped() {
        let old = json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false});
        let new = json!({"type": "object", "properties": {}, "additionalProperties": false});
        let p = json_reader_accepts(&new, &old);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].path, "/properties/a");
    }

    #[test]
    fn transitive_modes_compare_with_every_earlier_version() {
        // v1 has `total` integer; v2 drops it (open model); v3 brings it back as a string.
        let v1 = json!({"type": "object", "properties": {"total": {"type": "integer"}}});
        let v2 = json!({"type": "object", "properties": {}});
        let v3 = json!({"type": "object", "properties": {"total": {"type": "string"}}});
        assert!(check_json(Compatibility::Backward, &v3, &[v1.clone(), v2.clone()]).is_ok(), "v2 → v3 alone is fine");
        let e = check_json(Compatibility::BackwardTransitive, &v3, &[v1, v2]).unwrap_err();
        assert_eq!((e[0].rule, e[0].version, e[0].path.as_str()), ("BACKWARD", 1, "/properties/total/type"), "{e:?}");
        assert!(e[0].to_string().contains("version 1") && e[0].to_string().contains("integer"), "{}", e[0]);
    }

    #[test]
    fn modes_parse_and_print_as_the_registries_name_them() {
        for m in Compatibility::ALL {
            assert_eq!(m.as_str().parse::<Compatibility>(), Ok(m));
            assert_eq!(serde_json::to_value(m).unwrap(), json!(m.as_str()));
        }
        assert_eq!("full_transitive".parse::<Compatibility>(), Ok(Compatibility::FullTransitive));
        assert!("SIDEWAYS".parse::<Compatibility>().unwrap_err().contains("BACKWARD_TRANSITIVE"));
        assert!(check_json(Compatibility::Full, &json!({"type": "string"}), &[]).is_ok(), "a first version");
    }
}

//! JSON Schema (draft 2020-12): compiling a validator, and whether a reader's schema reads what a
//! writer's schema allows.
//!
//! "A reader can read what a writer wrote" is decided structurally by [`reader_accepts`]: every
//! instance the writer's schema allows must be allowed by the reader's. The rules, each a table
//! test below:
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

use std::collections::BTreeSet;

use serde_json::Value;

use crate::{Invalid, Problem};

mod fast;

/// A compiled JSON Schema: `jsonschema`'s validator, and a fast check (`json/fast.rs`) of the common
/// case when the schema keeps to the keywords it knows.
pub struct Compiled {
    full: jsonschema::Validator,
    fast: Option<fast::Fast>,
}

impl Compiled {
    /// Whether data is checked without building a `serde_json::Value` first when valid.
    pub fn has_fast_path(&self) -> bool {
        self.fast.is_some()
    }
}

/// Compiles `schema` (draft 2020-12).
pub fn compile(schema: &Value) -> Result<Compiled, String> {
    let full = jsonschema::draft202012::new(schema).map_err(|e| {
        let at = e.instance_path().to_string();
        format!(
            "not a valid JSON Schema (draft 2020-12){}: {e}",
            if at.is_empty() { String::new() } else { format!(" at {at}") }
        )
    })?;
    Ok(Compiled { full, fast: fast::Fast::compile(schema) })
}

/// Checks `data` (JSON; empty = `null`) against `compiled`: the first error's JSON pointer.
///
/// The common case (valid data, a schema of common keywords) is vouched for while the data is
/// read, allocating nothing; anything else is parsed into a `serde_json::Value` and validated by
/// `jsonschema`, which decides and says where.
pub fn validate(compiled: &Compiled, data: &[u8]) -> Result<(), Invalid> {
    if !data.is_empty() && compiled.fast.as_ref().is_some_and(|f| f.vouches(data)) {
        return Ok(());
    }
    // serde_json reads an object keyed with one of its private tokens as another value (a
    // `RawValue`'s content): what would be checked would not be the data.
    const PRIVATE: &[u8] = b"$serde_json::private::";
    if data.windows(PRIVATE.len()).any(|w| w == PRIVATE) {
        return Err(Invalid {
            path: String::new(),
            message: "its data holds \"$serde_json::private::\", which Herald's JSON parser reserves: rename that key or string".into(),
        });
    }
    let value: Value = if data.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(data)
            .map_err(|e| Invalid { path: String::new(), message: format!("its data is not JSON ({e})") })?
    };
    let validator = &compiled.full;
    // The common case costs no error building.
    if validator.is_valid(&value) {
        return Ok(());
    }
    match validator.validate(&value) {
        Ok(()) => Ok(()),
        Err(e) => {
            let path = e.instance_path().to_string();
            let message = format!("at {}: {e}", if path.is_empty() { "the root" } else { &path });
            Err(Invalid { path, message })
        }
    }
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
pub fn reader_accepts(reader: &Value, writer: &Value) -> Vec<Problem> {
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
    use crate::check;
    use herald_model::schema::{Compatibility, SchemaFormat};
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
        crate::assert_compatibility_table(SchemaFormat::JsonSchema, &order(), cases());
    }

    #[test]
    fn a_closed_reader_cannot_read_a_property_it_dropped() {
        let old = json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false});
        let new = json!({"type": "object", "properties": {}, "additionalProperties": false});
        let p = reader_accepts(&new, &old);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].path, "/properties/a");
    }

    #[test]
    fn transitive_modes_compare_with_every_earlier_version() {
        // v1 has `total` integer; v2 drops it (open model); v3 brings it back as a string.
        let j = |v: Value| (SchemaFormat::JsonSchema, v);
        let v1 = j(json!({"type": "object", "properties": {"total": {"type": "integer"}}}));
        let v2 = j(json!({"type": "object", "properties": {}}));
        let v3 = json!({"type": "object", "properties": {"total": {"type": "string"}}});
        assert!(
            check(SchemaFormat::JsonSchema, Compatibility::Backward, &v3, &[v1.clone(), v2.clone()]).is_ok(),
            "v2 → v3 alone is fine"
        );
        let e = check(SchemaFormat::JsonSchema, Compatibility::BackwardTransitive, &v3, &[v1, v2]).unwrap_err();
        assert_eq!((e[0].rule, e[0].version, e[0].path.as_str()), ("BACKWARD", 1, "/properties/total/type"), "{e:?}");
        assert!(e[0].to_string().contains("version 1") && e[0].to_string().contains("integer"), "{}", e[0]);
    }
}

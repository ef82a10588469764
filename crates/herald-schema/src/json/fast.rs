//! The common case of JSON Schema validation without building a `serde_json::Value`: a schema
//! written only with the keywords below is compiled a second time into [`Fast`], which checks
//! an event's data while `serde_json` reads it — no map, no key and no string is allocated.
//!
//! It vouches or defers, never refuses: `true` means `jsonschema` would find the data valid;
//! anything it is not sure of (an error, a float where an integer is asked for, a number
//! compared with a limit it cannot compare exactly) answers `false`, and the caller validates
//! in full, which also finds the error's path. A differential test (below) checks that it
//! never vouches for what `jsonschema` refuses.
//!
//! Keywords: `type`, `enum`, `const`, `properties`, `required`, `additionalProperties`,
//! `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, `minLength`, `maxLength`,
//! `items`, `minItems`, `maxItems`, `true`/`false` schemas, and `$ref` to `#` or
//! `#/$defs/NAME` as a node's only keyword (what `schemars` writes for a nested type);
//! annotations (`title`, `description`, `format` — not asserted by draft 2020-12 by default —,
//! …) are ignored. A schema with any other keyword anywhere gets no fast path.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

/// A schema's fast checker.
#[derive(Debug)]
pub struct Fast {
    nodes: Vec<Node>,
    root: usize,
}

/// Keywords that do not change what is valid.
const ANNOTATIONS: &[&str] =
    &["title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly", "$comment", "format"];

/// The `$schema` values that mean the draft every schema is compiled with.
const DRAFT_2020_12: &[&str] =
    &["https://json-schema.org/draft/2020-12/schema", "https://json-schema.org/draft/2020-12/schema#"];

/// More nodes than this: no fast path (a schema's size is bounded anyway).
const NODES_MAX: usize = 4_096;

const NULL: u8 = 1;
const BOOLEAN: u8 = 2;
const OBJECT: u8 = 4;
const ARRAY: u8 = 8;
const STRING: u8 = 16;
/// Numbers `serde_json` reads as integers (`type: integer` or `number`).
const INTEGER: u8 = 32;
/// Numbers it reads as floats (`type: number` only: an integral float is left to the full check).
const FLOAT: u8 = 64;
const ANY: u8 = 127;

/// The node that accepts anything (`true`), and the one that accepts nothing (`false`).
const ANYTHING: usize = 0;
const NOTHING: usize = 1;

/// One schema. `items` and `additional` default to [`ANYTHING`].
#[derive(Debug, Default)]
struct Node {
    types: u8,
    /// `enum` or `const`: the values allowed.
    values: Option<Vec<Value>>,
    /// Lower and upper bounds: the limit, and whether it is exclusive.
    lower: Vec<(Number, bool)>,
    upper: Vec<(Number, bool)>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    min_items: Option<u64>,
    max_items: Option<u64>,
    items: usize,
    /// Named properties: name, schema, the bit it sets when required.
    properties: Vec<(Box<str>, usize, Option<u32>)>,
    /// What other properties are read with.
    additional: usize,
    /// One bit per required property.
    required: u64,
}

/// What compiling needs besides the nodes: the root (for `$defs`) and the definitions compiled.
struct Building<'a> {
    root: &'a Value,
    defs: Vec<(String, usize)>,
    resolving: Vec<String>,
}

impl Fast {
    /// A fast checker for `schema`, `None` when it uses a keyword outside the subset.
    pub fn compile(schema: &Value) -> Option<Fast> {
        let mut fast = Fast { nodes: vec![Node { types: ANY, ..Node::default() }, Node::default()], root: ANYTHING };
        if let Some(s) = schema.get("$schema")
            && !s.as_str().is_some_and(|s| DRAFT_2020_12.contains(&s))
        {
            return None;
        }
        // A root alias, or an identifier anywhere (even in a definition nothing refers to: it
        // can move what `#` and `#/$defs/…` resolve to): no fast path.
        if schema.get("$ref").is_some() || has_identifier(schema) {
            return None;
        }
        let mut building = Building { root: schema, defs: Vec::new(), resolving: Vec::new() };
        fast.root = fast.node(schema, &mut building, true, None)?;
        Some(fast)
    }

    /// Whether `data` (JSON) is valid; `false` also when not sure.
    pub fn vouches(&self, data: &[u8]) -> bool {
        let mut de = serde_json::Deserializer::from_slice(data);
        Check { fast: self, at: self.root }.deserialize(&mut de).is_ok() && de.end().is_ok()
    }

    /// Compiles `schema` into a node, its index; `def` names the `$defs` entry it is.
    fn node(&mut self, schema: &Value, building: &mut Building<'_>, root: bool, def: Option<&str>) -> Option<usize> {
        let keywords = match schema {
            Value::Bool(true) => return Some(ANYTHING),
            Value::Bool(false) => return Some(NOTHING),
            Value::Object(k) => k,
            _ => return None,
        };
        if let Some(reference) = keywords.get("$ref") {
            // An alias: `$ref` alone (with annotations).
            if keywords.keys().any(|k| k != "$ref" && !ANNOTATIONS.contains(&k.as_str())) {
                return None;
            }
            return self.reference(reference.as_str()?, building);
        }
        if self.nodes.len() >= NODES_MAX {
            return None;
        }
        // Reserved first, so that a definition can refer to itself.
        let at = self.nodes.len();
        self.nodes.push(Node::default());
        if let Some(name) = def {
            building.defs.push((name.to_owned(), at));
        }
        let mut node = Node { types: ANY, ..Node::default() };
        for (keyword, value) in keywords {
            match keyword.as_str() {
                "type" => node.types = types(value)?,
                // Both in one node: each would have to hold; left to the full check.
                "enum" | "const" if node.values.is_some() => return None,
                "enum" => node.values = Some(value.as_array()?.clone()),
                "const" => node.values = Some(vec![value.clone()]),
                "minimum" => node.lower.push((number(value)?, false)),
                "exclusiveMinimum" => node.lower.push((number(value)?, true)),
                "maximum" => node.upper.push((number(value)?, false)),
                "exclusiveMaximum" => node.upper.push((number(value)?, true)),
                "minLength" => node.min_length = Some(value.as_u64()?),
                "maxLength" => node.max_length = Some(value.as_u64()?),
                "minItems" => node.min_items = Some(value.as_u64()?),
                "maxItems" => node.max_items = Some(value.as_u64()?),
                "items" => node.items = self.node(value, building, false, None)?,
                "additionalProperties" => node.additional = self.node(value, building, false, None)?,
                "properties" | "required" => {}
                "$schema" | "$defs" if root => {}
                k if ANNOTATIONS.contains(&k) => {}
                _ => return None,
            }
        }
        let required: Vec<&str> = match keywords.get("required") {
            Some(r) => r.as_array()?.iter().map(Value::as_str).collect::<Option<_>>()?,
            None => Vec::new(),
        };
        if required.len() > 64 {
            return None;
        }
        let bit = |name: &str| required.iter().position(|r| *r == name).map(|i| i as u32);
        if let Some(properties) = keywords.get("properties") {
            for (name, schema) in properties.as_object()? {
                let target = self.node(schema, building, false, None)?;
                node.properties.push((name.as_str().into(), target, bit(name)));
            }
        }
        for (i, name) in required.iter().enumerate() {
            node.required |= 1 << i;
            // Required but not declared: read with `additionalProperties`.
            if !node.properties.iter().any(|(n, ..)| &**n == *name) {
                node.properties.push(((*name).into(), node.additional, bit(name)));
            }
        }
        self.nodes[at] = node;
        Some(at)
    }

    /// The node `reference` names: `#` or `#/$defs/NAME` (no escapes).
    fn reference(&mut self, reference: &str, building: &mut Building<'_>) -> Option<usize> {
        if reference == "#" {
            // The root, compiled first (a root that is not a plain node has no fast path).
            return building.root.is_object().then_some(2);
        }
        let name = reference.strip_prefix("#/$defs/")?;
        if name.contains(['~', '%', '/']) {
            return None;
        }
        if let Some((_, at)) = building.defs.iter().find(|(n, _)| n == name) {
            return Some(*at);
        }
        if building.resolving.iter().any(|n| n == name) {
            // Aliases in a cycle that reaches no schema.
            return None;
        }
        let schema = building.root.get("$defs")?.get(name)?;
        building.resolving.push(name.to_owned());
        let at = self.node(schema, building, false, Some(name));
        building.resolving.pop();
        at
    }
}

/// Keywords that name a schema resource or a dynamic scope.
const IDENTIFIERS: &[&str] = &["$id", "$anchor", "$dynamicAnchor", "$dynamicRef", "$recursiveRef", "$recursiveAnchor"];

/// Whether any object in `schema` has an identifier keyword (a property or an `enum` value of
/// that name counts too: that only costs the fast path).
fn has_identifier(schema: &Value) -> bool {
    match schema {
        Value::Object(o) => o.iter().any(|(k, v)| IDENTIFIERS.contains(&k.as_str()) || has_identifier(v)),
        Value::Array(a) => a.iter().any(has_identifier),
        _ => false,
    }
}

/// The type bits `type` allows.
fn types(value: &Value) -> Option<u8> {
    let one = |name: &str| match name {
        "null" => Some(NULL),
        "boolean" => Some(BOOLEAN),
        "object" => Some(OBJECT),
        "array" => Some(ARRAY),
        "string" => Some(STRING),
        "integer" => Some(INTEGER),
        "number" => Some(INTEGER | FLOAT),
        _ => None,
    };
    match value {
        Value::String(name) => one(name),
        Value::Array(names) => names.iter().try_fold(0, |bits, n| Some(bits | one(n.as_str()?)?)),
        _ => None,
    }
}

fn number(value: &Value) -> Option<Number> {
    value.as_number().cloned()
}

/// A number as `serde_json` reads it.
#[derive(Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn of(n: &Number) -> Option<Num> {
        if let Some(i) = n.as_i64() {
            Some(Num::Int(i.into()))
        } else if let Some(u) = n.as_u64() {
            Some(Num::Int(u.into()))
        } else {
            n.as_f64().map(Num::Float)
        }
    }

    /// `self` compared with `other`, exactly; `None` when that cannot be told in `f64`.
    fn cmp(self, other: Num) -> Option<std::cmp::Ordering> {
        /// Integers a float holds exactly.
        const EXACT: i128 = 1 << 53;
        let float = |n: Num| match n {
            Num::Float(f) => Some(f),
            Num::Int(i) if (-EXACT..=EXACT).contains(&i) => Some(i as f64),
            Num::Int(_) => None,
        };
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            _ => float(self)?.partial_cmp(&float(other)?),
        }
    }
}

/// Checking one value against one node, as `serde_json` reads it.
#[derive(Clone, Copy)]
struct Check<'a> {
    fast: &'a Fast,
    at: usize,
}

impl Check<'_> {
    fn node(&self) -> &Node {
        &self.fast.nodes[self.at]
    }

    /// `Ok` when the node allows a value of `ty`.
    fn of_type<E: de::Error>(&self, ty: u8) -> Result<&Node, E> {
        let node = self.node();
        if node.types & ty == 0 {
            return Err(unsure());
        }
        Ok(node)
    }

    /// `Ok` (the node) when the node allows an array or object (`ty`) and has no `enum`, which
    /// is not compared with those.
    fn compound<E: de::Error>(&self, ty: u8) -> Result<&Node, E> {
        let node = self.of_type(ty)?;
        if node.values.is_some() {
            return Err(unsure());
        }
        Ok(node)
    }

    /// `Ok` (the node) when the node allows a value of `ty` that `is` one of its `enum` values
    /// (if it has any).
    fn scalar<E: de::Error>(&self, ty: u8, is: impl Fn(&Value) -> bool) -> Result<&Node, E> {
        let node = self.of_type(ty)?;
        match &node.values {
            Some(values) if !values.iter().any(is) => Err(unsure()),
            _ => Ok(node),
        }
    }

    fn number<E: de::Error>(&self, ty: u8, n: Num) -> Result<(), E> {
        let node = self.of_type(ty)?;
        if let Some(values) = &node.values {
            let Num::Int(n) = n else { return Err(unsure()) };
            let equal = |v: &Value| v.as_number().and_then(Num::of).is_some_and(|v| matches!(v, Num::Int(v) if v == n));
            if !values.iter().any(equal) {
                return Err(unsure());
            }
        }
        let within = |limits: &[(Number, bool)], inside: std::cmp::Ordering| {
            limits.iter().all(|(limit, exclusive)| {
                Num::of(limit)
                    .and_then(|l| n.cmp(l))
                    .is_some_and(|o| o == inside || (!exclusive && o == std::cmp::Ordering::Equal))
            })
        };
        if within(&node.lower, std::cmp::Ordering::Greater) && within(&node.upper, std::cmp::Ordering::Less) {
            Ok(())
        } else {
            Err(unsure())
        }
    }
}

/// `Ok` when `n` is within the bounds there are.
fn within<E: de::Error>(n: u64, min: Option<u64>, max: Option<u64>) -> Result<(), E> {
    if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) { Err(unsure()) } else { Ok(()) }
}

/// Not vouched for: the full check decides.
fn unsure<E: de::Error>() -> E {
    E::custom("")
}

impl<'de> DeserializeSeed<'de> for Check<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar(NULL, Value::is_null).map(drop)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<(), E> {
        self.scalar(BOOLEAN, |v| v.as_bool() == Some(b)).map(drop)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<(), E> {
        self.number(INTEGER, Num::Int(n.into()))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<(), E> {
        self.number(INTEGER, Num::Int(n.into()))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<(), E> {
        self.number(FLOAT, Num::Float(n))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        let node = self.scalar(STRING, |v| v.as_str() == Some(s))?;
        if node.min_length.is_some() || node.max_length.is_some() {
            within(s.chars().count() as u64, node.min_length, node.max_length)?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let node = self.compound(ARRAY)?;
        let mut count = 0u64;
        while seq.next_element_seed(Check { fast: self.fast, at: node.items })?.is_some() {
            count += 1;
        }
        within(count, node.min_items, node.max_items)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let node = self.compound(OBJECT)?;
        let mut seen = 0u64;
        while let Some((at, bit)) = map.next_key_seed(Key(node))? {
            if at == NOTHING {
                return Err(unsure());
            }
            if let Some(bit) = bit {
                seen |= 1 << bit;
            }
            // Read even when anything goes: skipping (`IgnoredAny`) would not check that its
            // strings are UTF-8, which the full check's parse does.
            map.next_value_seed(Check { fast: self.fast, at })?;
        }
        if seen & node.required != node.required {
            return Err(unsure());
        }
        Ok(())
    }
}

/// A property name: which schema its value is read with, and its required bit.
struct Key<'a>(&'a Node);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = (usize, Option<u32>);

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = (usize, Option<u32>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a property name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
        // serde_json's own tokens (`RawValue`, arbitrary-precision numbers): a `Value` read from
        // an object keyed so is something else than an object.
        if name.starts_with("$serde_json::private::") {
            return Err(unsure());
        }
        Ok(self
            .0
            .properties
            .iter()
            .find(|(n, ..)| **n == *name)
            .map_or((self.0.additional, None), |(_, at, bit)| (*at, *bit)))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn full(schema: &Value) -> jsonschema::Validator {
        jsonschema::draft202012::new(schema).unwrap()
    }

    /// Whether the fast path vouches for `data`, after checking it agrees with `jsonschema`.
    fn vouches(schema: &Value, data: &str) -> bool {
        let fast = Fast::compile(schema).expect("a fast path");
        let vouched = fast.vouches(data.as_bytes());
        if vouched {
            let value: Value = serde_json::from_str(data).unwrap();
            assert!(full(schema).is_valid(&value), "vouched for what jsonschema refuses: {data} against {schema}");
        }
        vouched
    }

    #[test]
    fn a_typical_record_is_vouched_for_and_every_break_of_it_is_left_to_the_full_check() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Order",
            "type": "object",
            "properties": {
                "id": { "type": "string", "maxLength": 12, "format": "uuid" },
                "customer": { "type": "string", "minLength": 1 },
                "total": { "type": "integer", "minimum": 0 },
                "currency": { "enum": ["EUR", "USD"] },
                "items": { "type": "array", "items": { "type": "number", "exclusiveMaximum": 10.5 }, "maxItems": 3 },
                "note": { "type": ["string", "null"] }
            },
            "required": ["id", "customer", "total", "currency"],
            "additionalProperties": false
        });
        let good = r#"{"id":"o-1","customer":"é","total":3,"currency":"EUR","items":[1,2.5,10],"note":null}"#;
        assert!(vouches(&schema, good));
        assert!(vouches(&schema, r#" {"currency":"USD","total":0,"customer":"c","id":"\u00e9\"x"} "#));
        for bad in [
            r#"{"id":"o-1","customer":"c","total":3}"#,                 // currency missing
            r#"{"id":"o-1","customer":"","total":3,"currency":"EUR"}"#, // minLength
            r#"{"id":"o-123456789012","customer":"c","total":3,"currency":"EUR"}"#, // maxLength
            r#"{"id":"o-1","customer":"c","total":-1,"currency":"EUR"}"#, // minimum
            r#"{"id":"o-1","customer":"c","total":"3","currency":"EUR"}"#, // type
            r#"{"id":"o-1","customer":"c","total":3,"currency":"GBP"}"#, // enum
            r#"{"id":"o-1","customer":"c","total":3,"currency":"EUR","items":[10.5]}"#, // exclusiveMaximum
            r#"{"id":"o-1","customer":"c","total":3,"currency":"EUR","items":[1,1,1,1]}"#, // maxItems
            r#"{"id":"o-1","customer":"c","total":3,"currency":"EUR","extra":1}"#, // additionalProperties
            r#"{"id":"o-1","customer":"c","total":3,"currency":"EUR"} x"#, // trailing
            r#"{"id":"o-1","customer":"c","total":3,"currency":"EUR""#, // truncated
            r#"[1]"#,
        ] {
            assert!(!vouches(&schema, bad), "{bad}");
        }
        // What it is not sure of goes to the full check, which may well accept it.
        assert!(!vouches(&schema, r#"{"id":"o-1","customer":"c","total":3.0,"currency":"EUR"}"#));
        assert!(full(&schema).is_valid(&json!({"id":"o-1","customer":"c","total":3.0,"currency":"EUR"})));
    }

    #[test]
    fn nested_types_as_schemars_writes_them_are_vouched_for_recursion_included() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "line": { "$ref": "#/$defs/Line", "description": "the first line" },
                "tree": { "$ref": "#/$defs/Tree" },
                "again": { "type": "array", "items": { "$ref": "#" } }
            },
            "required": ["line"],
            "$defs": {
                "Line": { "type": "object", "properties": { "qty": { "type": "integer", "format": "uint32", "minimum": 0 } }, "required": ["qty"] },
                "Tree": { "type": "object", "properties": { "children": { "type": "array", "items": { "$ref": "#/$defs/Tree" } } } }
            }
        });
        assert!(vouches(
            &schema,
            r#"{"line":{"qty":2},"tree":{"children":[{"children":[]},{}]},"again":[{"line":{"qty":0}}]}"#
        ));
        assert!(!vouches(&schema, r#"{"line":{"qty":-2}}"#));
        assert!(!vouches(&schema, r#"{"line":{"qty":1},"tree":{"children":[{"children":[1]}]}}"#));
        assert!(!vouches(&schema, r#"{"line":{"qty":1},"again":[{}]}"#));
    }

    #[test]
    fn a_schema_with_other_keywords_has_no_fast_path() {
        for schema in [
            json!({"type": "string", "pattern": "^a"}),
            json!({"anyOf": [{"type": "string"}, {"type": "null"}]}),
            json!({"properties": {"a": {"$ref": "#/$defs/A", "minimum": 1}}, "$defs": {"A": {}}}),
            json!({"$ref": "#/$defs/A", "$defs": {"A": {}}}),
            json!({"properties": {"a": {"$ref": "#/$defs/A"}}, "$defs": {"A": {"$ref": "#/$defs/B"}, "B": {"$ref": "#/$defs/A"}}}),
            json!({"properties": {"a": {"$ref": "other.json"}}}),
            json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "string"}),
            json!({"patternProperties": {"^x": {}}}),
            json!({"minProperties": 1}),
            json!({"$id": "https://example.com/s", "type": "string"}),
            json!({"properties": {"a": {"$defs": {}}}}),
            json!({"nullable": true}),
            json!({"const": "a", "enum": ["a", "b"]}),
            json!({"enum": ["a", "b"], "const": "a"}),
            // An identifier in an unused definition can move what `#/$defs/A` names.
            json!({
                "properties": {"a": {"$ref": "#/$defs/A"}},
                "$defs": {"A": {"type": "string"}, "X": {"$id": "https://e.x/", "$defs": {"A": {"type": "integer"}}}}
            }),
            json!({"properties": {"a": {"$anchor": "a"}}}),
        ] {
            assert!(Fast::compile(&schema).is_none(), "{schema}");
        }
        // Still a valid schema, validated in full.
        let c = crate::json::compile(&json!({"type": "string", "pattern": "^a"})).unwrap();
        assert!(!c.has_fast_path());
        assert!(crate::json::validate(&c, br#""b""#).is_err());
        assert!(crate::json::validate(&c, br#""ab""#).is_ok());
    }

    #[test]
    fn data_that_is_no_json_is_never_vouched_for() {
        for schema in [json!(true), json!({}), json!({"properties": {"a": true}}), json!({"items": {}})] {
            let fast = Fast::compile(&schema).unwrap();
            for data in [
                &b"{\"a\": \"\xff\"}"[..],
                b"{\"b\": \"\xc3\"}",
                b"[\"\xff\"]",
                b"{\"a\": \"\\ud800\"}",
                b"{\"a\": 1,}",
                b"{\"a\": 1} {}",
                b"",
                b"nul",
            ] {
                assert!(!fast.vouches(data), "{schema}: {}", String::from_utf8_lossy(data));
                assert!(serde_json::from_slice::<Value>(data).is_err());
            }
            assert!(fast.vouches(br#"{"a": "\u00e9", "b": ["\ud83d\ude00"]}"#), "{schema}");
        }
    }

    #[test]
    fn serde_json_s_private_tokens_are_left_to_the_full_check() {
        // With serde_json's `raw_value` feature (on in this workspace), an object whose first key
        // is its RawValue token reads as a `Value` that is no object.
        let token = r#"{"$serde_json::private::RawValue": "5"}"#;
        for schema in [json!({"type": "object"}), json!(true), json!({"properties": {"id": {"type": "string"}}})] {
            let fast = Fast::compile(&schema).unwrap();
            assert!(!fast.vouches(token.as_bytes()), "{schema}");
            assert!(!fast.vouches(br#"{"$serde_json::private::RawValue": "1", "id": "x"}"#), "{schema}");
        }
        assert!(!vouches(&json!({"type": "object"}), token));
        // Nor does the full check take it for the value serde_json would make of it.
        let c = crate::json::compile(&json!({"type": "integer"})).unwrap();
        let e = crate::json::validate(&c, token.as_bytes()).unwrap_err();
        assert!(e.message.contains("reserves"), "{e:?}");
    }

    #[test]
    fn formats_are_annotations_as_in_jsonschema() {
        let schema = json!({"type": "string", "format": "email"});
        assert!(vouches(&schema, r#""not an email""#));
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-5i64..5).prop_map(Value::from),
            Just(json!(u64::MAX)),
            Just(json!(i64::MIN)),
            Just(json!(9_007_199_254_740_993u64)),
            prop_oneof![Just(1.5), Just(2.0), Just(-0.5), Just(1e300)].prop_map(Value::from),
            prop_oneof![Just(""), Just("a"), Just("ab"), Just("é"), Just("aé\"")].prop_map(Value::from),
        ]
    }

    fn instance() -> impl Strategy<Value = Value> {
        scalar().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(prop_oneof![Just("a"), Just("b"), Just("c"), Just("d")], inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
            ]
        })
    }

    fn limit() -> impl Strategy<Value = Value> {
        prop_oneof![
            (-3i64..4).prop_map(Value::from),
            Just(json!(1.5)),
            Just(json!(9_007_199_254_740_992u64)),
            Just(json!(-0.5))
        ]
    }

    fn leaf() -> impl Strategy<Value = Value> {
        let ty = prop_oneof![
            Just("null"),
            Just("boolean"),
            Just("object"),
            Just("array"),
            Just("string"),
            Just("integer"),
            Just("number")
        ];
        prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            Just(json!({})),
            ty.clone().prop_map(|t| json!({ "type": t })),
            (ty.clone(), ty).prop_map(|(a, b)| if a == b { json!({ "type": a }) } else { json!({ "type": [a, b] }) }),
            (0u64..3, 0u64..3).prop_map(|(a, b)| json!({"type": "string", "minLength": a, "maxLength": a + b})),
            prop::collection::vec(scalar(), 0..4).prop_map(|v| json!({ "enum": v })),
            scalar().prop_map(|v| json!({ "const": v })),
            (
                prop_oneof![Just("minimum"), Just("maximum"), Just("exclusiveMinimum"), Just("exclusiveMaximum")],
                limit()
            )
                .prop_map(|(k, l)| json!({ k: l })),
            (limit(), limit()).prop_map(|(a, b)| json!({"type": "number", "minimum": a, "exclusiveMinimum": b})),
        ]
    }

    fn schema() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 16, 3, |inner| {
            let name = prop_oneof![Just("a"), Just("b"), Just("c")];
            prop_oneof![
                (
                    prop::collection::btree_map(name.clone(), inner.clone(), 0..3),
                    prop::collection::btree_set(name, 0..3),
                    prop::option::of(inner.clone()),
                )
                    .prop_map(|(p, r, a)| {
                        let mut s = json!({ "type": "object", "properties": p, "required": r });
                        if let Some(a) = a {
                            s["additionalProperties"] = a;
                        }
                        s
                    }),
                (inner, 0u64..2, 1u64..3)
                    .prop_map(|(i, min, more)| json!({"items": i, "minItems": min, "maxItems": min + more})),
            ]
        })
    }

    /// A root that refers to a definition and to itself, as `schemars` writes nested and
    /// recursive types.
    fn with_refs() -> impl Strategy<Value = Value> {
        (schema(), schema(), any::<bool>()).prop_map(|(def, other, closed)| {
            json!({
                "type": "object",
                "properties": {
                    "a": { "$ref": "#/$defs/A", "description": "an alias" },
                    "b": other,
                    "c": { "type": "array", "items": { "$ref": "#" }, "maxItems": 2 }
                },
                "additionalProperties": !closed,
                "$defs": { "A": def, "Unused": { "pattern": "^x" } }
            })
        })
    }

    fn has_float(v: &Value) -> bool {
        match v {
            Value::Number(n) => n.is_f64(),
            Value::Array(a) => a.iter().any(has_float),
            Value::Object(o) => o.values().any(has_float),
            _ => false,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Never vouches for what `jsonschema` refuses; and, for data without floats (where it
        /// may defer), vouches for all it accepts.
        #[test]
        fn the_fast_path_agrees_with_jsonschema(
            schema in prop_oneof![3 => schema(), 1 => with_refs()],
            instances in prop::collection::vec(instance(), 16),
        ) {
            let fast = Fast::compile(&schema).expect("the generated keywords are the fast path's");
            let full = full(&schema);
            for instance in instances {
                let data = serde_json::to_vec(&instance).unwrap();
                let valid = full.is_valid(&serde_json::from_slice::<Value>(&data).unwrap());
                let vouched = fast.vouches(&data);
                prop_assert!(!vouched || valid, "vouched for {instance} against {schema}");
                if !has_float(&instance) && !schema.to_string().contains('.') {
                    prop_assert!(vouched || !valid, "deferred {instance} against {schema}");
                }
            }
        }
    }
}

//! Protobuf schemas: a message named in a `FileDescriptorSet` ([`ProtobufSchema`], stored as
//! JSON with the set in base64), events' data checked by decoding it as that message, and
//! whether a reader's message reads what a writer's wrote.
//!
//! Validation: the data must decode as the message (wire types match the fields), carry no field
//! number the message does not declare (data written with another schema) and set every proto2
//! `required` field, in nested messages too.
//!
//! "A reader reads what a writer wrote" follows the Protobuf wire format (fields are matched by
//! number, never by name) and the language guide's "Updating a message type"; each rule is a
//! table test below:
//! - a field only the writer has is skipped by the reader (removing a field is compatible);
//!   one only the reader has reads as its default (adding one is compatible) — unless it is
//!   proto2 `required`;
//! - a field's type may change only where the reader decodes every value the writer can write
//!   unchanged: `int32` → `int64`, `uint32` → `uint64`/`int64`, `sint32` → `sint64`, `bool` →
//!   any varint integer, an enum → `int32`/`int64`, `string` → `bytes`, a message → `bytes`;
//!   anything else (`int64` → `int32` truncates, `string` ↔ `int64` is another wire type,
//!   `fixed32` ↔ `sfixed32` flips signs) is a change of type;
//! - singular ↔ repeated and map ↔ non-map are changes;
//! - an enum may gain values, never lose one the writer may write;
//! - nested messages are compared the same way, by field number;
//! - fields the writer may set together must not share a `oneof` in the reader (moving several
//!   fields into one oneof loses all but one);
//! - a field number (or name) one side reserves must not be used by the other: a reserved
//!   number is one whose old data may still be out there.

use std::collections::{HashMap, HashSet};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use herald_model::schema::ProtobufSchema;
use prost::encoding::WireType;
use prost_reflect::{
    Cardinality, DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, Value,
};
use serde_json::Value as Json;

use crate::{Invalid, Problem};

/// A Protobuf message type, ready to check data with.
#[derive(Debug, Clone)]
pub struct Message {
    desc: MessageDescriptor,
    /// Whether this message or one it uses is not proto3 (proto2 `required` fields and closed
    /// enums): then only the full decode can tell (the fast check tracks neither).
    full_decode: bool,
    /// What the fast check reads: this message (first) and every message it uses, as plain
    /// tables. Descriptors are handles into a shared pool; looking a field up through them
    /// counts references, which publishers validating at once fight over.
    layouts: std::sync::Arc<[Layout]>,
}

/// A message's fields for the fast check: by number (sorted), how each is written.
#[derive(Debug)]
struct Layout {
    fields: Vec<(u32, WireField)>,
}

/// How a field is written, as far as the fast check looks.
#[derive(Debug, Clone, Copy)]
struct WireField {
    /// The wire type of one value.
    wire: WireType,
    what: What,
}

#[derive(Debug, Clone, Copy)]
enum What {
    /// A nested message: its index in the layouts.
    Message(usize),
    String,
    Bytes,
    /// A repeated scalar: also accepted packed.
    Packable,
    /// A singular scalar.
    Scalar,
}

/// The layouts of `messages` (as [`uses`] lists them, the message itself first).
fn layouts(messages: &[MessageDescriptor]) -> std::sync::Arc<[Layout]> {
    messages
        .iter()
        .map(|m| {
            let mut fields: Vec<(u32, WireField)> = m
                .fields()
                .map(|f| {
                    let kind = f.kind();
                    let what = match &kind {
                        Kind::Message(n) => What::Message(messages.iter().position(|x| x == n).expect("in uses")),
                        Kind::String => What::String,
                        Kind::Bytes => What::Bytes,
                        _ if f.is_list() => What::Packable,
                        _ => What::Scalar,
                    };
                    (f.number(), WireField { wire: wire_type(&kind), what })
                })
                .collect();
            fields.sort_by_key(|(n, _)| *n);
            Layout { fields }
        })
        .collect()
}

/// The JSON document registering `message` from `descriptor_set` (a serialized
/// `FileDescriptorSet`).
pub fn document(message: &str, descriptor_set: &[u8]) -> Json {
    serde_json::to_value(ProtobufSchema {
        message: message.to_owned(),
        descriptor_set: STANDARD.encode(descriptor_set),
    })
    .expect("a ProtobufSchema serializes")
}

impl Message {
    /// The message a registered document names: why not, when the document is not
    /// `{"message": …, "descriptor_set": …}`, the set does not decode or does not define it.
    pub fn from_document(document: &Json) -> Result<Message, String> {
        let doc: ProtobufSchema = serde_json::from_value(document.clone()).map_err(|e| {
            format!(
                "a Protobuf schema is {{\"message\": \"pkg.Name\", \"descriptor_set\": \"<base64 FileDescriptorSet>\"}}: {e}"
            )
        })?;
        let bytes = STANDARD
            .decode(doc.descriptor_set.as_bytes())
            .map_err(|e| format!("descriptor_set is not base64 (standard, padded): {e}"))?;
        Message::from_descriptor_set(&doc.message, &bytes)
    }

    /// `message` as `descriptor_set` (a serialized `FileDescriptorSet`) defines it.
    pub fn from_descriptor_set(message: &str, descriptor_set: &[u8]) -> Result<Message, String> {
        let pool = DescriptorPool::decode(descriptor_set).map_err(|e| {
            format!(
                "descriptor_set is not a complete FileDescriptorSet ({e}); build it with `protoc --include_imports -o` \
                 or let `herald schema add --proto` compile the .proto files"
            )
        })?;
        let desc = pool.get_message_by_name(message.trim_start_matches('.')).ok_or_else(|| {
            let known: Vec<String> = pool.all_messages().take(20).map(|m| m.full_name().to_owned()).collect();
            format!("the descriptor set defines no message {message:?} (it has: {})", known.join(", "))
        })?;
        let used = uses(&desc);
        let full_decode = used.iter().any(|m| m.parent_file().syntax() != prost_reflect::Syntax::Proto3);
        Ok(Message { desc, full_decode, layouts: layouts(&used) })
    }

    /// Its full name: `shop.v1.Order`.
    pub fn name(&self) -> &str {
        self.desc.full_name()
    }

    /// Its descriptor.
    pub fn descriptor(&self) -> &MessageDescriptor {
        &self.desc
    }

    /// The message and every message and enum it uses, as `.proto` text (fields by number;
    /// options and comments are not kept): what AsyncAPI documents and people read. Types of
    /// the message's package are declared by their names in it (`Order`, `Order.Item` for a
    /// nested one), others by their full names; fields name types fully (`.shop.v1.Item`).
    pub fn proto_text(&self) -> String {
        let file = self.desc.parent_file();
        let syntax = if file.syntax() == prost_reflect::Syntax::Proto3 { "proto3" } else { "proto2" };
        let package = file.package_name().to_owned();
        let local = |full: &str| -> String {
            match full.strip_prefix(&package).and_then(|r| r.strip_prefix('.')) {
                Some(name) if !package.is_empty() => name.to_owned(),
                _ => full.to_owned(),
            }
        };
        let mut out = format!("// {}\nsyntax = \"{syntax}\";\n", self.desc.full_name());
        if !package.is_empty() {
            out.push_str(&format!("package {package};\n"));
        }
        let (mut messages, mut enums) = (Vec::new(), Vec::new());
        let mut todo = vec![self.desc.clone()];
        let mut seen = HashSet::new();
        while let Some(m) = todo.pop() {
            if !seen.insert(m.full_name().to_owned()) {
                continue;
            }
            for f in m.fields() {
                match f.kind() {
                    Kind::Message(n) if n.is_map_entry() => {
                        for e in [n.map_entry_key_field(), n.map_entry_value_field()] {
                            match e.kind() {
                                Kind::Message(v) => todo.push(v),
                                Kind::Enum(v) if !enums.iter().any(|x: &prost_reflect::EnumDescriptor| x == &v) => {
                                    enums.push(v)
                                }
                                _ => {}
                            }
                        }
                    }
                    Kind::Message(n) => todo.push(n),
                    Kind::Enum(e) if !enums.contains(&e) => enums.push(e),
                    _ => {}
                }
            }
            messages.push(m);
        }
        for e in &enums {
            out.push_str(&format!("enum {} {{\n", local(e.full_name())));
            for v in e.values() {
                out.push_str(&format!("  {} = {};\n", v.name(), v.number()));
            }
            out.push_str("}\n");
        }
        for m in &messages {
            out.push_str(&format!("message {} {{\n", local(m.full_name())));
            for f in m.fields() {
                let label = match f.cardinality() {
                    Cardinality::Required => "required ",
                    _ if f.is_list() => "repeated ",
                    _ => "",
                };
                let ty = match f.kind() {
                    Kind::Message(n) if n.is_map_entry() => format!(
                        "map<{}, {}>",
                        short_kind(&n.map_entry_key_field()),
                        short_kind(&n.map_entry_value_field())
                    ),
                    _ => format!("{label}{}", short_kind(&f)),
                };
                out.push_str(&format!("  {ty} {} = {};\n", f.name(), f.number()));
            }
            let reserved: Vec<String> =
                m.reserved_ranges()
                    .map(|r| {
                        if r.end == r.start + 1 { r.start.to_string() } else { format!("{} to {}", r.start, r.end - 1) }
                    })
                    .collect();
            if !reserved.is_empty() {
                out.push_str(&format!("  reserved {};\n", reserved.join(", ")));
            }
            out.push_str("}\n");
        }
        out
    }

    /// Checks that `data` is this message: the path of the first problem (`items.price`).
    ///
    /// The common case reads the wire format once without building anything; only
    /// data it cannot vouch for is decoded in full, which finds the problem and says where.
    pub fn validate(&self, data: &[u8]) -> Result<(), Invalid> {
        if !self.full_decode && fits(&self.layouts, 0, data, 0) {
            return Ok(());
        }
        let message = DynamicMessage::decode(self.desc.clone(), data)
            .map_err(|e| decode_error(&self.desc, data, &e.to_string()))?;
        walk(&message, "")
    }
}

/// Every message `desc` uses, itself included.
fn uses(desc: &MessageDescriptor) -> Vec<MessageDescriptor> {
    let (mut out, mut todo) = (Vec::new(), vec![desc.clone()]);
    while let Some(m) = todo.pop() {
        if out.contains(&m) {
            continue;
        }
        todo.extend(m.fields().filter_map(|f| match f.kind() {
            Kind::Message(n) => Some(n),
            _ => None,
        }));
        out.push(m);
    }
    out
}

/// Nesting deeper than this is not vouched for (prost's own limit is 100).
const FITS_DEPTH_MAX: usize = 64;

/// Whether `buf` is, on the wire, message `at` of `layouts` with no unknown field: every
/// field's wire type is its declaration's (or packed), lengths fit, strings are UTF-8, nested
/// messages fit too. Builds nothing; `false` sends the data to the full decode.
fn fits(layouts: &[Layout], at: usize, mut buf: &[u8], depth: usize) -> bool {
    if depth > FITS_DEPTH_MAX {
        return false;
    }
    let fields = &layouts[at].fields;
    while !buf.is_empty() {
        let Ok((number, wire)) = prost::encoding::decode_key(&mut buf) else { return false };
        let Ok(i) = fields.binary_search_by_key(&number, |(n, _)| *n) else { return false };
        let field = fields[i].1;
        let expected = field.wire;
        match wire {
            WireType::Varint if expected == WireType::Varint => {
                if prost::encoding::decode_varint(&mut buf).is_err() {
                    return false;
                }
            }
            WireType::SixtyFourBit | WireType::ThirtyTwoBit if expected == wire => {
                let n = if wire == WireType::SixtyFourBit { 8 } else { 4 };
                let Some(rest) = buf.get(n..) else { return false };
                buf = rest;
            }
            WireType::LengthDelimited => {
                let Ok(len) = prost::encoding::decode_varint(&mut buf) else { return false };
                let Some(body) = usize::try_from(len).ok().and_then(|l| buf.get(..l)) else { return false };
                buf = &buf[body.len()..];
                let ok = match field.what {
                    What::Message(m) => fits(layouts, m, body, depth + 1),
                    What::String => std::str::from_utf8(body).is_ok(),
                    What::Bytes => true,
                    // Packed scalars: whole values only.
                    What::Packable => match expected {
                        WireType::Varint => {
                            let mut b = body;
                            while !b.is_empty() {
                                if prost::encoding::decode_varint(&mut b).is_err() {
                                    return false;
                                }
                            }
                            true
                        }
                        WireType::SixtyFourBit => body.len() % 8 == 0,
                        _ => body.len() % 4 == 0,
                    },
                    What::Scalar => false,
                };
                if !ok {
                    return false;
                }
            }
            _ => return false,
        }
    }
    true
}

/// An `Invalid` for data that does not decode: what prost says, where [`locate`] finds it.
fn decode_error(desc: &MessageDescriptor, data: &[u8], text: &str) -> Invalid {
    let what = text.strip_prefix("failed to decode Protobuf message: ").unwrap_or(text);
    let path = locate(desc, data, "").unwrap_or_default();
    Invalid {
        message: format!(
            "at {}: not a {} ({what})",
            if path.is_empty() { "the root" } else { &path },
            desc.full_name()
        ),
        path,
    }
}

/// The wire type a field of `kind` is written with.
fn wire_type(kind: &Kind) -> WireType {
    match kind {
        Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => WireType::SixtyFourBit,
        Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => WireType::ThirtyTwoBit,
        Kind::String | Kind::Bytes | Kind::Message(_) => WireType::LengthDelimited,
        _ => WireType::Varint,
    }
}

/// Where in `data` decoding as `desc` fails: the field path of the first field whose bytes do
/// not fit its declaration (`items[1].qty`), `None` when the wire format itself is intact.
fn locate(desc: &MessageDescriptor, mut buf: &[u8], path: &str) -> Option<String> {
    let mut seen: HashMap<u32, usize> = HashMap::new();
    while !buf.is_empty() {
        let Ok((number, wire)) = prost::encoding::decode_key(&mut buf) else { return Some(join(path, "#?")) };
        let field = desc.get_field(number);
        let index = seen.entry(number).or_default();
        let name = field.as_ref().map_or_else(|| format!("#{number}"), |f| f.name().to_owned());
        let at = match &field {
            Some(f) if f.is_list() => format!("{}[{index}]", join(path, &name)),
            _ => join(path, &name),
        };
        *index += 1;
        let body: &[u8] = match wire {
            WireType::Varint => {
                prost::encoding::decode_varint(&mut buf).ok()?;
                &[]
            }
            WireType::SixtyFourBit | WireType::ThirtyTwoBit => {
                let n = if wire == WireType::SixtyFourBit { 8 } else { 4 };
                if buf.len() < n {
                    return Some(at);
                }
                buf = &buf[n..];
                &[]
            }
            WireType::LengthDelimited => {
                let Ok(len) = prost::encoding::decode_varint(&mut buf) else { return Some(at) };
                let Some(body) = usize::try_from(len).ok().filter(|l| *l <= buf.len()).map(|l| &buf[..l]) else {
                    return Some(at);
                };
                buf = &buf[body.len()..];
                body
            }
            WireType::StartGroup | WireType::EndGroup => return Some(at),
        };
        let Some(field) = field else { continue };
        let kind = field.kind();
        let packed =
            wire == WireType::LengthDelimited && field.is_list() && wire_type(&kind) != WireType::LengthDelimited;
        if wire != wire_type(&kind) && !packed {
            return Some(at);
        }
        match kind {
            Kind::Message(m) if !packed => {
                if let Some(inner) = locate(&m, body, &at) {
                    return Some(inner);
                }
            }
            Kind::String if std::str::from_utf8(body).is_err() => return Some(at),
            _ => {}
        }
    }
    None
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") }
}

/// Unknown field numbers and missing required fields, depth first.
fn walk(message: &DynamicMessage, path: &str) -> Result<(), Invalid> {
    let desc = message.descriptor();
    if let Some(unknown) = message.unknown_fields().next() {
        let at = join(path, &format!("#{}", unknown.number()));
        return Err(Invalid {
            message: format!(
                "at {at}: field number {} is not in message {} (written with another schema? register it first)",
                unknown.number(),
                desc.full_name()
            ),
            path: at,
        });
    }
    for field in desc.fields() {
        if field.cardinality() == Cardinality::Required && !message.has_field(&field) {
            let at = join(path, field.name());
            return Err(Invalid { message: format!("at {at}: required field {} is missing", field.name()), path: at });
        }
    }
    for (field, value) in message.fields() {
        let at = join(path, field.name());
        match value {
            Value::Message(m) => walk(m, &at)?,
            Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::Message(m) = item {
                        walk(m, &format!("{at}[{i}]"))?;
                    }
                }
            }
            Value::Map(entries) => {
                for (key, item) in entries {
                    if let Value::Message(m) = item {
                        walk(m, &format!("{at}[{key:?}]"))?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// What in `writer`'s data `reader` cannot read (empty: nothing, by the rules above).
pub fn reader_accepts(reader: &Message, writer: &Message) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    messages(&reader.desc, &writer.desc, reader.desc.name(), &mut seen, &mut out);
    out
}

fn problem(out: &mut Vec<Problem>, path: &str, message: String) {
    out.push(Problem { path: path.to_owned(), message });
}

fn reserved(desc: &MessageDescriptor, number: u32) -> bool {
    desc.reserved_ranges().any(|r| r.contains(&number))
}

fn field_text(f: &FieldDescriptor) -> String {
    format!("{} {} = {}", kind_name(f), f.name(), f.number())
}

fn kind_name(f: &FieldDescriptor) -> String {
    let base = match f.kind() {
        Kind::Message(m) => m.full_name().to_owned(),
        Kind::Enum(e) => e.full_name().to_owned(),
        k => format!("{k:?}").to_lowercase(),
    };
    if f.is_map() {
        format!("map<{base}>")
    } else if f.is_list() {
        format!("repeated {base}")
    } else {
        base
    }
}

/// A field's type as `.proto` text: `int64`, `.shop.v1.Item`.
fn short_kind(f: &FieldDescriptor) -> String {
    match f.kind() {
        Kind::Message(m) => format!(".{}", m.full_name()),
        Kind::Enum(e) => format!(".{}", e.full_name()),
        k => format!("{k:?}").to_lowercase(),
    }
}

fn messages(
    reader: &MessageDescriptor,
    writer: &MessageDescriptor,
    path: &str,
    seen: &mut HashSet<(String, String)>,
    out: &mut Vec<Problem>,
) {
    if !seen.insert((reader.full_name().to_owned(), writer.full_name().to_owned())) {
        return;
    }
    for wf in writer.fields() {
        let Some(rf) = reader.get_field(wf.number()) else {
            if reserved(reader, wf.number()) || reader.reserved_names().any(|n| n == wf.name()) {
                problem(
                    out,
                    &join(path, wf.name()),
                    format!("{} uses a field number or name the other version reserves", field_text(&wf)),
                );
            }
            continue;
        };
        let at = join(path, rf.name());
        if reserved(writer, rf.number()) {
            problem(
                out,
                &at,
                format!("field number {} is reserved on the other side but used by {}", rf.number(), field_text(&rf)),
            );
        }
        field(&rf, &wf, &at, seen, out);
        oneofs(reader, writer, &rf, &wf, &at, out);
    }
    for rf in reader.fields() {
        if writer.get_field(rf.number()).is_some() {
            continue;
        }
        let at = join(path, rf.name());
        if reserved(writer, rf.number()) || writer.reserved_names().any(|n| n == rf.name()) {
            problem(out, &at, format!("{} uses a field number or name the other version reserves", field_text(&rf)));
        }
        if rf.cardinality() == Cardinality::Required {
            problem(out, &at, format!("required field {} added (the writer never wrote it)", field_text(&rf)));
        }
    }
}

fn field(
    rf: &FieldDescriptor,
    wf: &FieldDescriptor,
    at: &str,
    seen: &mut HashSet<(String, String)>,
    out: &mut Vec<Problem>,
) {
    if rf.is_map() != wf.is_map() || rf.is_list() != wf.is_list() {
        return problem(out, at, format!("field {} changed from {} to {}", wf.number(), kind_name(wf), kind_name(rf)));
    }
    if rf.is_map() {
        // Map entries are messages of (key = 1, value = 2): compared as such.
        if let (Kind::Message(r), Kind::Message(w)) = (rf.kind(), wf.kind()) {
            let (rk, wk) = (r.map_entry_key_field(), w.map_entry_key_field());
            let (rv, wv) = (r.map_entry_value_field(), w.map_entry_value_field());
            kinds(&rk, &wk, &format!("{at}.key"), seen, out);
            kinds(&rv, &wv, &format!("{at}.value"), seen, out);
        }
        return;
    }
    kinds(rf, wf, at, seen, out);
}

/// Whether the reader's type decodes every value the writer's type can write, unchanged.
fn kinds(
    rf: &FieldDescriptor,
    wf: &FieldDescriptor,
    at: &str,
    seen: &mut HashSet<(String, String)>,
    out: &mut Vec<Problem>,
) {
    use Kind::*;
    let ok = match (rf.kind(), wf.kind()) {
        (Message(r), Message(w)) => {
            messages(&r, &w, at, seen, out);
            true
        }
        (Enum(r), Enum(w)) => {
            for v in w.values() {
                if r.get_value(v.number()).is_none() {
                    problem(out, at, format!("enum value {} = {} of {} removed", v.name(), v.number(), w.full_name()));
                }
            }
            true
        }
        (Bytes, Message(_)) | (Bytes, String) => true,
        (Int64, Int32 | Uint32 | Bool | Enum(_)) | (Int32, Bool | Enum(_)) => true,
        (Uint64, Uint32 | Bool) | (Uint32, Bool) | (Sint64, Sint32) => true,
        (r, w) => r == w,
    };
    if !ok {
        problem(
            out,
            at,
            format!(
                "field {} changed type from {} to {}: the reader cannot decode every value the writer writes",
                wf.number(),
                kind_name(wf),
                kind_name(rf)
            ),
        );
    }
}

/// Fields the writer may set together that share a oneof in the reader.
fn oneofs(
    reader: &MessageDescriptor,
    writer: &MessageDescriptor,
    rf: &FieldDescriptor,
    wf: &FieldDescriptor,
    at: &str,
    out: &mut Vec<Problem>,
) {
    let Some(ro) = rf.containing_oneof() else { return };
    for other in ro.fields().filter(|o| o.number() > rf.number()) {
        let Some(w_other) = writer.get_field(other.number()) else { continue };
        let together = match (wf.containing_oneof(), w_other.containing_oneof()) {
            (Some(a), Some(b)) => a.full_name() != b.full_name(),
            _ => true,
        };
        if together {
            problem(
                out,
                at,
                format!(
                    "fields {} and {} may be set together by the writer but share oneof {} in {}: all but one are lost",
                    rf.name(),
                    other.name(),
                    ro.name(),
                    reader.full_name()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check;
    use herald_model::schema::{Compatibility, SchemaFormat};
    use prost::Message as _;

    /// Compiles `source` (the file `t.proto`) and names `message` in it.
    fn compile(source: &str, message: &str) -> (Message, Json) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.proto"), source).unwrap();
        let set = protox::compile(["t.proto"], [dir.path()]).unwrap_or_else(|e| panic!("{e}: {source}"));
        let doc = document(message, &set.encode_to_vec());
        (Message::from_document(&doc).unwrap(), doc)
    }

    const ORDER: &str = r#"
        syntax = "proto3";
        package shop.v1;
        enum Status { NEW = 0; PAID = 1; SHIPPED = 2; }
        message Item { string sku = 1; int32 qty = 2; }
        message Order {
            string id = 1;
            int32 total = 2;
            Status status = 3;
            repeated Item items = 4;
            string note = 5;
            map<string, int64> tags = 6;
            oneof payment { string card = 7; string iban = 8; }
            int64 placed_ms = 9;
            reserved 20;
        }
    "#;

    fn order() -> Json {
        compile(ORDER, "shop.v1.Order").1
    }

    /// `ORDER` with `from` replaced by `to`.
    fn changed(from: &str, to: &str) -> Json {
        assert!(ORDER.contains(from), "{from}");
        compile(&ORDER.replacen(from, to, 1), "shop.v1.Order").1
    }

    /// (change, backward compatible, forward compatible, the path a problem names)
    fn cases() -> Vec<(&'static str, Json, bool, bool, &'static str)> {
        vec![
            ("nothing", order(), true, true, ""),
            ("field renamed (same number)", changed("string note = 5;", "string remark = 5;"), true, true, ""),
            (
                "field added",
                changed("int64 placed_ms = 9;", "int64 placed_ms = 9; string coupon = 10;"),
                true,
                true,
                "",
            ),
            ("field removed", changed("string note = 5;", ""), true, true, ""),
            ("int32 widened to int64", changed("int32 total = 2;", "int64 total = 2;"), true, false, "Order.total"),
            (
                "int64 narrowed to int32",
                changed("int64 placed_ms = 9;", "int32 placed_ms = 9;"),
                false,
                true,
                "Order.placed_ms",
            ),
            (
                "string to int64 (another wire type)",
                changed("string note = 5;", "int64 note = 5;"),
                false,
                false,
                "Order.note",
            ),
            ("string to bytes", changed("string note = 5;", "bytes note = 5;"), true, false, "Order.note"),
            (
                "field number reused with another type",
                changed("string note = 5;", "double discount = 5;"),
                false,
                false,
                "Order.discount",
            ),
            ("enum value added", changed("SHIPPED = 2;", "SHIPPED = 2; RETURNED = 3;"), true, false, "Order.status"),
            ("enum value removed", changed("SHIPPED = 2;", ""), false, true, "Order.status"),
            ("enum to int32", changed("Status status = 3;", "int32 status = 3;"), true, false, "Order.status"),
            ("singular to repeated", changed("string id = 1;", "repeated string id = 1;"), false, false, "Order.id"),
            (
                "nested field type changed",
                changed("int32 qty = 2;", "string qty = 2;"),
                false,
                false,
                "Order.items.qty",
            ),
            ("nested field added", changed("int32 qty = 2;", "int32 qty = 2; string name = 3;"), true, true, ""),
            (
                "map value type changed",
                changed("map<string, int64> tags = 6;", "map<string, string> tags = 6;"),
                false,
                false,
                "Order.tags.value",
            ),
            (
                "one field moved into a new oneof",
                changed("string note = 5;", "oneof n { string note = 5; }"),
                true,
                true,
                "",
            ),
            (
                "separate fields moved into one oneof",
                changed(
                    "string id = 1;\n            int32 total = 2;",
                    "oneof key { string id = 1; int32 total = 2; }",
                ),
                false,
                true,
                "Order.id",
            ),
            ("a reserved number used", changed("reserved 20;", "string late = 20;"), false, false, "Order.late"),
            ("package renamed", compile(&ORDER.replace("shop.v1", "shop.v2"), "shop.v2.Order").1, true, true, ""),
        ]
    }

    #[test]
    fn protobuf_changes_follow_the_wire_format_rules_in_every_mode() {
        crate::assert_compatibility_table(SchemaFormat::Protobuf, &order(), cases());
    }

    #[test]
    fn a_field_number_reused_after_a_removal_is_caught_transitively() {
        let v1 = order();
        let v2 = changed("string note = 5;", "");
        let v3 = changed("string note = 5;", "int64 points = 5;");
        let earlier = [(SchemaFormat::Protobuf, v1), (SchemaFormat::Protobuf, v2)];
        assert!(check(SchemaFormat::Protobuf, Compatibility::Backward, &v3, &earlier).is_ok(), "v2 → v3 alone");
        let e = check(SchemaFormat::Protobuf, Compatibility::BackwardTransitive, &v3, &earlier).unwrap_err();
        assert_eq!((e[0].rule, e[0].version, e[0].path.as_str()), ("BACKWARD", 1, "Order.points"), "{e:?}");
        assert!(e[0].message.contains("string") && e[0].message.contains("int64"), "{}", e[0]);
        // A format change is refused in every mode but NONE.
        let json = [(SchemaFormat::JsonSchema, serde_json::json!({"type": "object"}))];
        assert!(check(SchemaFormat::Protobuf, Compatibility::Forward, &order(), &json).is_err());
        assert!(check(SchemaFormat::Protobuf, Compatibility::None, &order(), &json).is_ok());
    }

    #[test]
    fn proto2_required_fields_are_checked_both_ways() {
        let v1 = compile("syntax = \"proto2\"; message M { optional string a = 1; }", "M").1;
        let v2 = compile("syntax = \"proto2\"; message M { optional string a = 1; required int32 b = 2; }", "M").1;
        let b = crate::reader_accepts(SchemaFormat::Protobuf, &v2, &v1).unwrap();
        assert_eq!(b.len(), 1, "{b:?}");
        assert!(b[0].message.contains("required field"), "{b:?}");
        assert!(crate::reader_accepts(SchemaFormat::Protobuf, &v1, &v2).unwrap().is_empty());
    }

    #[test]
    fn data_is_checked_as_the_message_with_the_path_of_the_first_problem() {
        let (m, _) = compile(ORDER, "shop.v1.Order");
        let item = m.descriptor().parent_pool().get_message_by_name("shop.v1.Item").unwrap();
        let mut good = DynamicMessage::new(m.descriptor().clone());
        good.set_field_by_name("id", Value::String("o-1".into()));
        good.set_field_by_name("total", Value::I32(7));
        let mut it = DynamicMessage::new(item.clone());
        it.set_field_by_name("sku", Value::String("s".into()));
        good.set_field_by_name("items", Value::List(vec![Value::Message(it)]));
        m.validate(&good.encode_to_vec()).unwrap();
        m.validate(b"").unwrap();

        // A string where total (varint) is: another wire type.
        let bad = [0x12, 0x01, b'x'];
        let e = m.validate(&bad).unwrap_err();
        assert_eq!(e.path, "total", "{e:?}");
        // Inside items[0]: field 2 (qty, a varint) written as a string.
        let bad = [0x22, 0x03, 0x12, 0x01, b'x'];
        let e = m.validate(&bad).unwrap_err();
        assert_eq!(e.path, "items[0].qty", "{e:?}");
        // A field number the message does not have.
        let unknown = [0x58, 0x01]; // field 11, varint
        let e = m.validate(&unknown).unwrap_err();
        assert_eq!(e.path, "#11", "{e:?}");
        assert!(e.message.contains("field number 11"), "{e:?}");
        let nested_unknown = [0x22, 0x02, 0x58, 0x01];
        assert_eq!(m.validate(&nested_unknown).unwrap_err().path, "items[0].#11");
        // Not protobuf at all.
        assert!(m.validate(b"{\"id\": 1}").is_err());
        let (p2, _) = compile("syntax = \"proto2\"; message M { required int32 b = 2; }", "M");
        assert_eq!(p2.validate(b"").unwrap_err().path, "b");
    }

    #[test]
    fn the_message_prints_as_proto_text_with_what_it_uses() {
        let (m, _) = compile(ORDER, "shop.v1.Order");
        let text = m.proto_text();
        for want in [
            "syntax = \"proto3\";\npackage shop.v1;",
            "message Order {",
            "  repeated .shop.v1.Item items = 4;",
            "  map<string, int64> tags = 6;",
            "  .shop.v1.Status status = 3;",
            "enum Status {",
            "  SHIPPED = 2;",
            "message Item {",
            "  reserved 20;",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        assert!(!text.contains("TagsEntry"), "{text}");
    }

    #[test]
    fn the_fast_check_never_accepts_what_the_full_decode_refuses() {
        let (m, _) = compile(ORDER, "shop.v1.Order");
        let mut good = DynamicMessage::new(m.descriptor().clone());
        good.set_field_by_name("id", Value::String("o-1".into()));
        good.set_field_by_name("tags", Value::Map([(prost_reflect::MapKey::String("a".into()), Value::I64(1))].into()));
        good.set_field_by_name("placed_ms", Value::I64(-5));
        let bytes = good.encode_to_vec();
        assert!(fits(&m.layouts, 0, &bytes, 0), "a valid message takes the fast path");
        // Every truncation and every single-byte change of a valid message: whenever the fast
        // check vouches for it, the full decode must accept it too.
        let mut vouched = 0;
        for cut in 0..=bytes.len() {
            let mut variants = vec![bytes[..cut].to_vec()];
            for i in 0..bytes.len() {
                for x in [0x00, 0x01, 0x08, 0x0a, 0x12, 0x7f, 0x80, 0xff] {
                    let mut v = bytes.clone();
                    v[i] = x;
                    variants.push(v);
                }
            }
            for v in variants {
                if fits(&m.layouts, 0, &v, 0) {
                    vouched += 1;
                    let full = DynamicMessage::decode(m.descriptor().clone(), v.as_slice()).map_err(|e| e.to_string());
                    assert!(full.is_ok_and(|d| walk(&d, "").is_ok()), "{v:02x?}");
                }
            }
        }
        assert!(vouched > 100, "the corpus exercises the fast path: {vouched}");
    }

    #[test]
    fn documents_that_are_no_schema_say_why() {
        let e = Message::from_document(&serde_json::json!({"message": "M"})).unwrap_err();
        assert!(e.contains("descriptor_set"), "{e}");
        let e = Message::from_document(&document("M", b"\x0a\x03abc")).unwrap_err();
        assert!(e.contains("FileDescriptorSet"), "{e}");
        let (_, doc) = compile(ORDER, "shop.v1.Order");
        let mut other = doc.clone();
        other["message"] = "shop.v1.Nope".into();
        let e = Message::from_document(&other).unwrap_err();
        assert!(e.contains("shop.v1.Order"), "{e}");
    }
}

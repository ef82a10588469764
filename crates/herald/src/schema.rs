//! Schemas in the SDK: register a schema derived from a Rust type, and tell which version an
//! event was written with.
//!
//! - [`json_schema_of`]: the JSON Schema (draft 2020-12) of a `T: schemars::JsonSchema`, to
//!   publish `T` with [`Producer::publish_json`](crate::Producer::publish_json) and handle it
//!   with [`Consumer::handler_json`](crate::Consumer::handler_json);
//! - [`protobuf_of`]: the Protobuf schema of a message type generated with `prost-reflect`
//!   (its descriptor and every file it imports), to publish with
//!   [`Producer::publish_protobuf`](crate::Producer::publish_protobuf) and handle with
//!   [`Consumer::handler_protobuf`](crate::Consumer::handler_protobuf);
//! - [`Client::register_schema`](crate::Client::register_schema) registers either;
//! - [`version_of`]: the version of its type's schema an event was validated against (the
//!   broker stamps it into `dataschema`).
//!
//! The vocabulary (modes, formats, a registered version) is `herald_model::schema`'s, re-exported.

use herald_core::Event;
use prost::Message as _;
use prost_reflect::ReflectMessage;

pub use herald_model::schema::{
    Compatibility, Incompatibility, NewSchema, ProtobufSchema, SchemaFormat, SchemaPolicy, SchemaVersion, UnknownTypes,
};

/// The registration of `T`'s JSON Schema (draft 2020-12, derived by `schemars`) for events of
/// type `ty`.
pub fn json_schema_of<T: schemars::JsonSchema>(ty: &str) -> NewSchema {
    let schema = schemars::generate::SchemaSettings::draft2020_12().into_generator().into_root_schema_for::<T>();
    NewSchema { ty: ty.to_owned(), format: SchemaFormat::JsonSchema, schema: schema.to_value(), compatibility: None }
}

/// The registration of the Protobuf message `T` (its full name, and a `FileDescriptorSet` of
/// every file its descriptor pool holds) for events of type `ty`.
pub fn protobuf_of<T: ReflectMessage + Default>(ty: &str) -> NewSchema {
    let desc = T::default().descriptor();
    let set = desc.parent_pool().file_descriptor_protos().cloned().collect::<Vec<_>>();
    let bytes = prost_reflect::prost_types::FileDescriptorSet { file: set }.encode_to_vec();
    NewSchema {
        ty: ty.to_owned(),
        format: SchemaFormat::Protobuf,
        schema: herald_schema::protobuf::document(desc.full_name(), &bytes),
        compatibility: None,
    }
}

/// The schema version `event` was validated against: the `n` of its `dataschema`
/// (`herald:/v1/topics/<t>/schemas/<type>/versions/<n>`), `None` when it was not validated.
pub fn version_of(event: &Event) -> Option<u32> {
    let d = event.dataschema()?.strip_prefix("herald:/v1/topics/")?;
    let (_, n) = d.rsplit_once("/versions/")?;
    n.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(schemars::JsonSchema, serde::Serialize)]
    #[allow(dead_code)]
    struct Order {
        id: String,
        total: u32,
        note: Option<String>,
    }

    #[test]
    fn a_rust_type_s_json_schema_is_draft_2020_12_with_its_required_fields() {
        let s = json_schema_of::<Order>("order.placed");
        assert_eq!(s.schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
        assert_eq!(s.schema["required"], serde_json::json!(["id", "total"]));
        assert_eq!(s.schema["properties"]["total"]["type"], "integer");
    }

    #[test]
    fn a_rust_type_s_json_schema_checks_its_values_on_the_common_path() {
        let s = json_schema_of::<Order>("order.placed");
        let v = herald_schema::compile(s.format, &s.schema).unwrap();
        assert!(matches!(&v, herald_schema::Validator::Json(c) if c.has_fast_path()), "{}", s.schema);
        let good = serde_json::to_vec(&Order { id: "o-1".into(), total: 3, note: None }).unwrap();
        v.validate(&good).unwrap();
        let e = v.validate(br#"{"id": "o-1", "total": -3}"#).unwrap_err();
        assert_eq!(e.path, "/total", "{e:?}");
    }

    /// A prost message and the descriptor it reflects (what `prost-reflect-build` generates).
    #[derive(Clone, PartialEq, prost::Message)]
    struct Shipped {
        #[prost(string, tag = "1")]
        id: String,
        #[prost(int64, tag = "2")]
        at_ms: i64,
    }

    impl ReflectMessage for Shipped {
        fn descriptor(&self) -> prost_reflect::MessageDescriptor {
            use prost_reflect::prost_types::field_descriptor_proto::{Label, Type};
            use prost_reflect::prost_types::{
                DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
            };
            static POOL: std::sync::LazyLock<prost_reflect::DescriptorPool> = std::sync::LazyLock::new(|| {
                let field = |name: &str, number, ty: Type| FieldDescriptorProto {
                    name: Some(name.into()),
                    number: Some(number),
                    label: Some(Label::Optional.into()),
                    r#type: Some(ty.into()),
                    json_name: Some(name.into()),
                    ..Default::default()
                };
                let file = FileDescriptorProto {
                    name: Some("shop.proto".into()),
                    package: Some("shop".into()),
                    syntax: Some("proto3".into()),
                    message_type: vec![DescriptorProto {
                        name: Some("Shipped".into()),
                        field: vec![field("id", 1, Type::String), field("at_ms", 2, Type::Int64)],
                        ..Default::default()
                    }],
                    ..Default::default()
                };
                prost_reflect::DescriptorPool::from_file_descriptor_set(FileDescriptorSet { file: vec![file] }).unwrap()
            });
            POOL.get_message_by_name("shop.Shipped").unwrap()
        }
    }

    #[test]
    fn a_prost_type_s_registration_names_its_message_and_checks_its_values() {
        let s = protobuf_of::<Shipped>("order.shipped");
        assert_eq!((s.ty.as_str(), s.format), ("order.shipped", SchemaFormat::Protobuf));
        assert_eq!(s.schema["message"], "shop.Shipped", "{}", s.schema);
        let v = herald_schema::compile(s.format, &s.schema).unwrap();
        v.validate(&Shipped { id: "o-1".into(), at_ms: 7 }.encode_to_vec()).unwrap();
        // Field 2 written as a string: not a Shipped, and the error names the field.
        let e = v.validate(b"\x0a\x03o-1\x12\x01x").unwrap_err();
        assert!(e.message.contains("at_ms") || e.path.contains("at_ms"), "{e:?}");
    }

    #[test]
    fn the_version_is_read_from_dataschema() {
        let e = |d: &str| Event::builder("t").dataschema(d).build().unwrap();
        assert_eq!(version_of(&e("herald:/v1/topics/o/schemas/order.placed/versions/12")), Some(12));
        assert_eq!(version_of(&e("https://example.com/schema")), None);
        assert_eq!(version_of(&Event::builder("t").build().unwrap()), None);
    }
}

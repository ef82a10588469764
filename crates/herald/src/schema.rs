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
    fn the_version_is_read_from_dataschema() {
        let e = |d: &str| Event::builder("t").dataschema(d).build().unwrap();
        assert_eq!(version_of(&e("herald:/v1/topics/o/schemas/order.placed/versions/12")), Some(12));
        assert_eq!(version_of(&e("https://example.com/schema")), None);
        assert_eq!(version_of(&Event::builder("t").build().unwrap()), None);
    }
}

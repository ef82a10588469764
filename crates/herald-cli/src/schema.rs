//! `herald schema add|check|list|show|diff|delete|policy` and `herald asyncapi`: a topic's
//! schemas per event type, over any backend that keeps them (`herald://`, `file://`, `mem://`).
//!
//! A JSON Schema comes from a file (`--json-schema order.json`); a Protobuf message from `.proto`
//! files compiled here with protox (`--proto shop.proto --message shop.v1.Order`, imports found
//! under `-I` directories) or from a descriptor set (`--descriptor-set shop.pb`, as `protoc
//! --include_imports -o` writes it).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use herald::schema::{Compatibility, NewSchema, SchemaFormat, SchemaPolicy, SchemaVersion, UnknownTypes};
use prost::Message as _;
use serde_json::{Value, json};

use crate::Global;
use crate::commands::{print_json, print_table, with_client};

#[derive(Debug, Subcommand)]
pub enum SchemaCmd {
    /// Registers the next version of a type's schema (refused, naming each change, when it
    /// breaks the type's compatibility rule).
    Add(Define),
    /// Says whether `add` would accept a schema, and what it would break; registers nothing.
    Check(Define),
    /// The topic's schema policy and the latest version of each type.
    List {
        /// The topic.
        topic: String,
    },
    /// One version of a type's schema (the latest by default).
    Show {
        /// The topic.
        topic: String,
        /// The CloudEvents type.
        #[arg(value_name = "TYPE")]
        ty: String,
        /// The version.
        #[arg(long)]
        version: Option<u32>,
    },
    /// What changed between two versions of a type's schema: the documents line by line, and
    /// what breaks BACKWARD (new readers, old data) and FORWARD (old readers, new data).
    Diff {
        /// The topic.
        topic: String,
        /// The CloudEvents type.
        #[arg(value_name = "TYPE")]
        ty: String,
        /// The older version (default: the one before `--to`).
        #[arg(long)]
        from: Option<u32>,
        /// The newer version (default: the latest).
        #[arg(long)]
        to: Option<u32>,
    },
    /// Removes every version of a type's schema (its events are then of an unknown type).
    Delete {
        /// The topic.
        topic: String,
        /// The CloudEvents type.
        #[arg(value_name = "TYPE")]
        ty: String,
    },
    /// Shows or sets what the topic does with types without a schema, and its default rule.
    Policy {
        /// The topic.
        topic: String,
        /// `allow` (store them unchecked) or `refuse`.
        #[arg(long, value_parser = parse_unknown)]
        unknown_types: Option<UnknownTypes>,
        /// NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE.
        #[arg(long)]
        compatibility: Option<Compatibility>,
    },
}

/// A schema to register or check.
#[derive(Debug, Args)]
pub struct Define {
    /// The topic.
    topic: String,
    /// The CloudEvents type the schema describes.
    #[arg(value_name = "TYPE")]
    ty: String,
    /// A JSON Schema (draft 2020-12) file; `-` reads stdin.
    #[arg(long, conflicts_with_all = ["proto", "descriptor_set"])]
    json_schema: Option<PathBuf>,
    /// `.proto` files to compile (with protox); needs --message.
    #[arg(long, num_args = 1.., conflicts_with = "descriptor_set")]
    proto: Vec<PathBuf>,
    /// Directories imports are looked up in (default: each --proto file's directory).
    #[arg(short = 'I', long = "include")]
    include: Vec<PathBuf>,
    /// A serialized FileDescriptorSet (`protoc --include_imports -o FILE`); needs --message.
    #[arg(long)]
    descriptor_set: Option<PathBuf>,
    /// The Protobuf message's full name: `shop.v1.Order`.
    #[arg(long)]
    message: Option<String>,
    /// The rule to check with, and the type's rule from then on (default: the type's, else the
    /// topic's).
    #[arg(long)]
    compatibility: Option<Compatibility>,
}

fn parse_unknown(s: &str) -> Result<UnknownTypes, String> {
    match s {
        "allow" => Ok(UnknownTypes::Allow),
        "refuse" => Ok(UnknownTypes::Refuse),
        _ => Err(format!("{s:?} is not allow or refuse")),
    }
}

impl Define {
    /// The registration this describes, read and compiled here.
    fn schema(&self) -> Result<NewSchema> {
        let (format, schema) = if let Some(path) = &self.json_schema {
            let text = if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading the JSON Schema from stdin")?
            } else {
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
            };
            let v: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
            (SchemaFormat::JsonSchema, v)
        } else {
            let Some(message) = &self.message else {
                bail!("give --json-schema FILE, or --proto FILE… / --descriptor-set FILE with --message NAME")
            };
            let set = if let Some(path) = &self.descriptor_set {
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
            } else if !self.proto.is_empty() {
                let includes: Vec<PathBuf> = if self.include.is_empty() {
                    self.proto.iter().map(|p| p.parent().map(PathBuf::from).unwrap_or_default()).collect()
                } else {
                    self.include.clone()
                };
                let includes: Vec<PathBuf> = includes
                    .into_iter()
                    .map(|p| if p.as_os_str().is_empty() { PathBuf::from(".") } else { p })
                    .collect();
                protox::compile(&self.proto, &includes)
                    .map_err(|e| anyhow::anyhow!("compiling {:?}: {e}", self.proto))?
                    .encode_to_vec()
            } else {
                bail!("--message needs --proto FILE… or --descriptor-set FILE")
            };
            // Checked here too, for an error that names the files.
            herald_schema::protobuf::Message::from_descriptor_set(message, &set).map_err(anyhow::Error::msg)?;
            (SchemaFormat::Protobuf, herald_schema::protobuf::document(message, &set))
        };
        Ok(NewSchema { ty: self.ty.clone(), format, schema, compatibility: self.compatibility })
    }
}

/// A version's document as text people read: JSON pretty-printed, Protobuf as `.proto`.
fn document_text(v: &SchemaVersion) -> String {
    herald_schema::document_text(v.format, &v.schema)
}

fn version_json(v: &SchemaVersion) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

pub async fn schema(g: &Global, c: SchemaCmd) -> Result<()> {
    let json = g.json;
    with_client(g, |client| async move {
        let b = client.backend();
        match c {
            SchemaCmd::Add(d) => {
                let s = d.schema()?;
                let v = b.register_schema(&d.topic, &s).await?;
                if json {
                    print_json(&version_json(&v));
                } else {
                    println!(
                        "{} on {}: version {} ({}, {}); valid events are stamped dataschema={}",
                        v.ty, v.topic, v.version, v.format, v.compatibility, v.dataschema
                    );
                }
            }
            SchemaCmd::Check(d) => {
                let s = d.schema()?;
                let problems = b.check_schema(&d.topic, &s).await?;
                if json {
                    print_json(&json!({ "compatible": problems.is_empty(), "problems": problems }));
                } else if problems.is_empty() {
                    println!("compatible: `herald schema add` would register it");
                } else {
                    for p in &problems {
                        println!("{p}");
                    }
                }
                if !problems.is_empty() {
                    bail!("{} incompatible change(s)", problems.len());
                }
            }
            SchemaCmd::List { topic } => {
                let (policy, schemas) = b.list_schemas(&topic).await?;
                if json {
                    let list: Vec<Value> = schemas.iter().map(version_json).collect();
                    print_json(&json!({ "policy": policy, "schemas": list }));
                } else {
                    println!("{}", policy_text(&policy));
                    if schemas.is_empty() {
                        println!("no schemas; `herald schema add {topic} TYPE --json-schema FILE` registers one");
                    } else {
                        let rows: Vec<Vec<String>> = schemas
                            .iter()
                            .map(|v| {
                                vec![
                                    v.ty.clone(),
                                    v.version.to_string(),
                                    v.format.to_string(),
                                    v.compatibility.to_string(),
                                    herald::Timestamp::from_unix_nanos(v.registered_ms.saturating_mul(1_000_000)).to_string(),
                                ]
                            })
                            .collect();
                        print_table(&["TYPE", "VERSION", "FORMAT", "COMPATIBILITY", "REGISTERED"], &rows);
                    }
                }
            }
            SchemaCmd::Show { topic, ty, version } => {
                let v = b.schema(&topic, &ty, version).await?;
                if json {
                    print_json(&version_json(&v));
                } else {
                    println!("# {} on {}, version {} ({}, {})", v.ty, v.topic, v.version, v.format, v.compatibility);
                    println!("{}", document_text(&v));
                }
            }
            SchemaCmd::Diff { topic, ty, from, to } => {
                let new = b.schema(&topic, &ty, to).await?;
                let from = match from {
                    Some(n) => n,
                    None if new.version > 1 => new.version - 1,
                    None => bail!("{ty} has one version on {topic}; nothing to compare it with"),
                };
                let old = b.schema(&topic, &ty, Some(from)).await?;
                // What `check` finds under each rule against the one older version.
                let problems = |mode: Compatibility| -> Vec<String> {
                    let earlier = [(old.format, old.schema.clone())];
                    herald_schema::check(new.format, mode, &new.schema, &earlier)
                        .err()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|p| format!("at {}: {}", if p.path.is_empty() { "the root" } else { &p.path }, p.message))
                        .collect()
                };
                let (backward, forward) = (problems(Compatibility::Backward), problems(Compatibility::Forward));
                let (a, b_text) = (document_text(&old), document_text(&new));
                let diff = similar::TextDiff::from_lines(&a, &b_text);
                if json {
                    print_json(&json!({
                        "from": old.version, "to": new.version,
                        "diff": diff.unified_diff().header(&format!("version {}", old.version), &format!("version {}", new.version)).to_string(),
                        "backward": backward, "forward": forward,
                    }));
                } else {
                    print!(
                        "{}",
                        diff.unified_diff()
                            .header(&format!("{ty} version {}", old.version), &format!("{ty} version {}", new.version))
                    );
                    for (rule, list) in [("BACKWARD (new readers, old data)", &backward), ("FORWARD (old readers, new data)", &forward)] {
                        if list.is_empty() {
                            println!("{rule}: compatible");
                        } else {
                            println!("{rule}: {} problem(s)", list.len());
                            for p in list {
                                println!("  {p}");
                            }
                        }
                    }
                }
            }
            SchemaCmd::Delete { topic, ty } => {
                let n = b.delete_schema(&topic, &ty).await?;
                if json {
                    print_json(&json!({ "deleted": n }));
                } else {
                    println!("deleted {n} version(s) of {ty}'s schema on {topic}");
                }
            }
            SchemaCmd::Policy { topic, unknown_types, compatibility } => {
                let (mut policy, _) = b.list_schemas(&topic).await?;
                if unknown_types.is_some() || compatibility.is_some() {
                    policy.unknown_types = unknown_types.unwrap_or(policy.unknown_types);
                    policy.compatibility = compatibility.unwrap_or(policy.compatibility);
                    policy = b.set_schema_policy(&topic, policy).await?;
                }
                if json {
                    print_json(&serde_json::to_value(policy).unwrap_or_default());
                } else {
                    println!("{}", policy_text(&policy));
                }
            }
        }
        Ok(())
    })
    .await
}

fn policy_text(p: &SchemaPolicy) -> String {
    let unknown = match p.unknown_types {
        UnknownTypes::Allow => "events of types without a schema are stored unchecked",
        UnknownTypes::Refuse => "events of types without a schema are refused",
    };
    format!("policy: {unknown}; default compatibility {}", p.compatibility)
}

/// `herald asyncapi`: the server's AsyncAPI 3.0 document, pretty-printed (one line with --json).
pub async fn asyncapi(g: &Global) -> Result<()> {
    let json = g.json;
    with_client(g, |client| async move {
        let doc = client.backend().asyncapi().await?;
        if json {
            print_json(&doc);
        } else {
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Ok(())
    })
    .await
}

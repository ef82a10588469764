//! The proto's list of error codes is `herald_model::Code`, line for line: a code added to the
//! model and not to the proto (or a status changed on one side only) fails here.

use herald_model::{Code, GrpcStatus};

fn grpc_name(s: GrpcStatus) -> String {
    // `ResourceExhausted` → `RESOURCE_EXHAUSTED`.
    let mut out = String::new();
    for (i, c) in format!("{s:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The line the proto holds for `code`.
fn line(code: Code) -> String {
    let retry = if code.is_retryable() { " retryable" } else { "" };
    format!("//   {:<22} {:<19} HTTP {}{retry}", code.as_str(), grpc_name(code.grpc_status()), code.http_status())
}

#[test]
fn the_proto_lists_every_code_with_its_statuses() {
    let proto = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto/herald/v1/herald.proto"))
        .expect("the proto is readable");
    let listed: Vec<&str> = proto.lines().filter(|l| l.starts_with("//   ") && l.contains(" HTTP ")).collect();
    let expected: Vec<String> = Code::ALL.iter().map(|&c| line(c)).collect();
    let missing: Vec<&String> = expected.iter().filter(|l| !listed.contains(&l.as_str())).collect();
    assert!(
        missing.is_empty(),
        "the proto's code list lacks or differs in:\n{}",
        missing.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("\n")
    );
    assert_eq!(listed.len(), expected.len(), "the proto lists codes the model does not have");
}

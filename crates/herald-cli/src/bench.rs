//! `herald bench`.

use anyhow::{Result, bail};

use crate::Global;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

pub async fn run(_g: &Global, _a: BenchArgs) -> Result<()> {
    bail!("not built yet")
}

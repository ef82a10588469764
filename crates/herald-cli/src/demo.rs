//! `herald demo`.

use anyhow::{Result, bail};

use crate::Global;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {}

pub async fn run(_g: &Global, _a: DemoArgs) -> Result<()> {
    bail!("not built yet")
}

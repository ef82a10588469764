//! The client commands: topic, publish, consume, group, dlq.

use anyhow::{Result, bail};

use crate::Global;

#[derive(Debug, clap::Subcommand)]
pub enum TopicCmd {
    /// Lists topics.
    List,
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The topic.
    pub topic: String,
}

#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    /// Topics.
    pub topics: Vec<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum GroupCmd {
    /// Lists groups.
    List,
}

#[derive(Debug, clap::Subcommand)]
pub enum DlqCmd {
    /// Lists dead letters.
    List,
}

pub async fn topic(_g: &Global, _c: TopicCmd) -> Result<()> {
    bail!("not built yet")
}
pub async fn publish(_g: &Global, _a: PublishArgs) -> Result<()> {
    bail!("not built yet")
}
pub async fn consume(_g: &Global, _a: ConsumeArgs) -> Result<()> {
    bail!("not built yet")
}
pub async fn group(_g: &Global, _c: GroupCmd) -> Result<()> {
    bail!("not built yet")
}
pub async fn dlq(_g: &Global, _c: DlqCmd) -> Result<()> {
    bail!("not built yet")
}

//! Integration tests of the broker, one module per area.

mod common;
mod crash;
mod damage_corpus;
mod dlq;
mod groups;
mod publish;
mod recovery;
mod review;
mod topics;
mod upgrade;

//! Integration tests of the log, one module per area.

mod common;
mod concurrency;
mod crash;
mod damage;
mod limits;
mod model;
mod regressions;
mod segments;

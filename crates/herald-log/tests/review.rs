//! Review tests.

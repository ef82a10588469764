//! Regression tests from review.

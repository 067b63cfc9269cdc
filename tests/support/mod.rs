//! Test helpers shared by integration tests: `mod support;` in a test file.
#![allow(dead_code)]

pub mod catalog;
pub mod engine;
pub mod leecher;
pub mod serve;
pub mod tree;

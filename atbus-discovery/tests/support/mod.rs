//! Helpers shared by the integration tests of atbus-discovery.
//!
//! Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub mod etcd;

//! Benchmarks of atbus-rs.
//!
//! The criterion benches live in `benches/` (run them with `cargo bench -p atbus-benches`); each
//! reports its figures next to a baseline measured in the same run, because the machines they run
//! on are shared and absolute times drift. The `atbus-bench` load tool will live here too.

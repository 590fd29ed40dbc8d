//! Benchmarks of atbus-rs.
//!
//! The criterion benches live in `benches/` (run them with `cargo bench -p atbus-benches`); each
//! reports its figures next to a baseline measured in the same run, because the machines they run
//! on are shared and absolute times drift. The `atbus-bench` load tool will live here too.

/// Reading back what criterion measured, for the summary tables the benches print after
/// criterion's own output.
pub mod report {
    use std::fmt::Display;
    use std::path::{Path, PathBuf};
    use std::time::SystemTime;

    /// Where criterion writes its estimates: `$CRITERION_HOME`, else `criterion/` in the target
    /// directory.
    pub fn output_directory() -> PathBuf {
        if let Some(home) = std::env::var_os("CRITERION_HOME") {
            return home.into();
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
        target.join("criterion")
    }

    /// Runs a bench binary: criterion configured from the command line (with this warm-up of
    /// 1 s and `measurement` time per benchmark) runs `benches`, then, on a real benchmark run,
    /// `summary` prints its table from the estimates written since the start.
    pub fn run(
        measurement: std::time::Duration,
        benches: impl FnOnce(&mut criterion::Criterion),
        summary: impl FnOnce(&Path, SystemTime),
    ) {
        let start = SystemTime::now();
        let directory = output_directory();
        let mut criterion = criterion::Criterion::default()
            .output_directory(&directory)
            .warm_up_time(std::time::Duration::from_secs(1))
            .measurement_time(measurement)
            .configure_from_args();
        benches(&mut criterion);
        criterion.final_summary();
        if is_bench_run() {
            summary(&directory, start);
        }
    }

    /// Whether this is a real benchmark run (`cargo bench`), which writes fresh estimates; test
    /// mode (`cargo test --benches`) does not.
    pub fn is_bench_run() -> bool {
        std::env::args().any(|arg| arg == "--bench")
    }

    /// Criterion's time per iteration, in nanoseconds, of benchmark `id` in `group`, if it was
    /// measured since `start`: the slope of a linear sampling, else the mean.
    pub fn nanoseconds(
        directory: &Path,
        group: &str,
        id: impl Display,
        start: SystemTime,
    ) -> Option<f64> {
        let path = directory
            .join(group)
            .join(id.to_string())
            .join("new/estimates.json");
        if std::fs::metadata(&path).ok()?.modified().ok()? < start {
            return None;
        }
        let estimates: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        let estimate = match &estimates["slope"] {
            serde_json::Value::Null => &estimates["mean"],
            slope => slope,
        };
        estimate["point_estimate"].as_f64()
    }
}

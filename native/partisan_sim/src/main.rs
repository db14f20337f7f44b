//! `partisan_sim`: runs the experiments and writes tables, data and plots to a results directory.
//!
//! ```text
//! partisan_sim [--out DIR] [--nodes 1000,10000] [--seed 1] [--rounds 10] [--stabilize 50]
//!              [--scaling 10,25,50,100,200] [--partition-secs 60]
//! ```
//! `make sim` runs it with the defaults into `sim/results/`.

use partisan_sim::experiments::{
    build_hyparview, crash_sweep, partition_experiment, scaling, view_stats, HyParViewSetup, PartitionRow,
};
use partisan_sim::net::NetConfig;
use partisan_sim::report;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("unknown argument {0:?} (see the usage in the source header)")]
    Unknown(String),
    #[error("{0} needs a value")]
    Missing(&'static str),
    #[error("bad value {value:?} for {flag}")]
    Bad { flag: &'static str, value: String },
    #[error("could not write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] partisan_core::hyparview::ConfigError),
}

struct Args {
    out: PathBuf,
    nodes: Vec<usize>,
    seed: u64,
    rounds: u32,
    stabilize: u32,
    scaling: Vec<usize>,
    partition_secs: u64,
}

fn parse_list(flag: &'static str, value: &str) -> Result<Vec<usize>, CliError> {
    value.split(',').map(|v| v.trim().parse().map_err(|_| CliError::Bad { flag, value: value.to_owned() })).collect()
}

fn parse_args() -> Result<Args, CliError> {
    let mut args = Args {
        out: PathBuf::from("sim/results"),
        nodes: vec![1000, 10_000],
        seed: 1,
        rounds: 10,
        stabilize: 50,
        scaling: vec![10, 25, 50, 100, 200],
        partition_secs: 60,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &'static str| it.next().ok_or(CliError::Missing(name));
        let number = |flag: &'static str, v: String| v.parse::<u64>().map_err(|_| CliError::Bad { flag, value: v });
        match flag.as_str() {
            "--out" => args.out = PathBuf::from(value("--out")?),
            "--nodes" => args.nodes = parse_list("--nodes", &value("--nodes")?)?,
            "--seed" => args.seed = number("--seed", value("--seed")?)?,
            "--rounds" => args.rounds = number("--rounds", value("--rounds")?)? as u32,
            "--stabilize" => args.stabilize = number("--stabilize", value("--stabilize")?)? as u32,
            "--scaling" => args.scaling = parse_list("--scaling", &value("--scaling")?)?,
            "--partition-secs" => args.partition_secs = number("--partition-secs", value("--partition-secs")?)?,
            _ => return Err(CliError::Unknown(flag)),
        }
    }
    Ok(args)
}

fn write(dir: &Path, name: &str, text: &str) -> Result<(), CliError> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|source| CliError::Write { path: path.display().to_string(), source })
}

fn main() {
    if let Err(e) = run() {
        eprintln!("partisan_sim: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), CliError> {
    let args = parse_args()?;
    std::fs::create_dir_all(&args.out).map_err(|source| CliError::Write { path: args.out.display().to_string(), source })?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let started = Instant::now();
    let mut summary = String::from("# Simulation results\n\n");
    let _ = writeln!(
        summary,
        "Seed {}, {} stabilization rounds, {} rounds after each crash, network latency {:?}, {} threads. \
         A round is one `shuffle_interval` (10 s). Regenerate with `make sim`.\n",
        args.seed,
        args.stabilize,
        args.rounds,
        NetConfig::default().latency,
        threads
    );
    summary.push_str("![reliability](reliability.png)\n![heal rounds](heal_rounds.png)\n![in-degree](indegree.png)\n![scaling](scaling.png)\n\n");
    let fractions: Vec<f64> = (0..20).map(|i| f64::from(i) * 0.05).collect();
    let mut partitions: Vec<PartitionRow> = Vec::new();
    for &nodes in &args.nodes {
        let t = Instant::now();
        let setup = HyParViewSetup { nodes, seed: args.seed, stabilize_rounds: args.stabilize, ..Default::default() };
        let base = build_hyparview(&setup)?;
        let build_secs = t.elapsed().as_secs_f64();
        let views = view_stats(&base, args.seed);
        let t = Instant::now();
        let rows = crash_sweep(&base, &fractions, args.rounds, args.seed, threads);
        let crash_secs = t.elapsed().as_secs_f64();
        partitions.push(partition_experiment(&base, args.partition_secs * 1000, args.rounds.max(20), args.seed));
        let table = report::crash_table(nodes, &rows);
        let views_table = report::view_table(nodes, &views);
        println!("{views_table}\n{table}");
        write(&args.out, &format!("crash_{nodes}.dat"), &report::crash_data(&rows))?;
        write(&args.out, &format!("indegree_{nodes}.dat"), &report::degree_data(&views))?;
        write(&args.out, &format!("hyparview_{nodes}.md"), &format!("{views_table}\n{table}"))?;
        let _ = writeln!(
            summary,
            "{views_table}\n{table}\nWall time at {nodes} nodes: build and stabilize {build_secs:.1} s, 20 crash runs {crash_secs:.1} s.\n"
        );
    }
    let partition_table = report::partition_table(&partitions);
    println!("{partition_table}");
    let _ = writeln!(summary, "{partition_table}");
    let t = Instant::now();
    let scaling_rows = scaling(&args.scaling, NetConfig::default(), args.seed);
    let scaling_table = report::scaling_table(&scaling_rows);
    println!("{scaling_table}");
    write(&args.out, "scaling.dat", &report::scaling_data(&scaling_rows))?;
    write(&args.out, "scaling.md", &scaling_table)?;
    let _ = writeln!(summary, "{scaling_table}\nWall time of the scaling runs: {:.1} s.\n", t.elapsed().as_secs_f64());
    let total = started.elapsed().as_secs_f64();
    let _ = writeln!(summary, "Total wall time: {total:.1} s.");
    write(&args.out, "README.md", &summary)?;
    for (name, script) in report::plot_scripts(&args.nodes) {
        match report::plot(&args.out, name, &script) {
            Ok(true) => {}
            Ok(false) => {
                println!("gnuplot not found: plots skipped (tables and .dat files are written; apt-get install gnuplot-nox)");
                break;
            }
            Err(e) => eprintln!("partisan_sim: plot skipped: {e}"),
        }
    }
    println!("results in {} ({total:.1} s)", args.out.display());
    Ok(())
}

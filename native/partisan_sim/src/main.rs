//! `partisan_sim`: runs the experiments and writes tables, data and plots to a results directory.
//!
//! ```text
//! partisan_sim [--out DIR] [--nodes 1000,10000] [--seed 1] [--rounds 10] [--stabilize 50]
//!              [--scaling 10,25,50,100,200] [--partition-secs 60] [--plumtree-nodes 1000,10000]
//! ```
//! `--plumtree-nodes` picks which of the `--nodes` overlays also run the Plumtree experiment
//! (default: all of them).
//! `make sim` runs it with the defaults into `sim/results/`.

use partisan_sim::broadcast::{plumtree_experiment, PlumtreeResult, PlumtreeSetup};
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
    Config(#[from] partisan_core::node::ConfigError),
}

struct Args {
    out: PathBuf,
    nodes: Vec<usize>,
    seed: u64,
    rounds: u32,
    stabilize: u32,
    scaling: Vec<usize>,
    partition_secs: u64,
    plumtree_nodes: Option<Vec<usize>>,
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
        plumtree_nodes: None,
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
            "--plumtree-nodes" => args.plumtree_nodes = Some(parse_list("--plumtree-nodes", &value("--plumtree-nodes")?)?),
            _ => return Err(CliError::Unknown(flag)),
        }
    }
    Ok(args)
}

/// How to read the Plumtree tables (Leitão, Pereira, Rodrigues, SRDS 2007).
const PLUMTREE_NOTES: &str = "### Plumtree over HyParView: how to read the tables

Plumtree runs on the HyParView overlays above (same seed: every simulated node is the live \
runtime's composition, whose overlay neighbours are Plumtree's neighbours). Every link \
starts eager, so the first broadcast floods the active views (RMR about active view size − 2); \
its duplicates prune links to lazy, after which the eager links form a spanning tree (tree = \
live − 1) and each node receives each payload once: RMR 0, the paper's \"RMR → 0 once the tree \
is built\". The crash is silent: payloads pushed to dead nodes are lost, and the survivors cut off \
from the tree wait for an IHAVE from a lazy neighbour and GRAFT it (lazy tick + GRAFT timeout, \
about 2 s a step), so right after a large crash a broadcast is late rather than lost: compare \
\"delivered\" (within the spacing) with \"by end\". When the links to the dead drop, HyParView's \
new neighbours join Plumtree as eager links: the next broadcast floods them (the RMR spike), \
PRUNEs follow and RMR is near 0 again a couple of broadcasts later. Swaps are the paper's \
optional tree optimisation (threshold 3 hops); with one tree shared by broadcasts from random \
origins it keeps swapping a share of the links at no RMR cost.
";

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
    let pt_setup = PlumtreeSetup { seed: args.seed, ..PlumtreeSetup::default() };
    let pt_sizes: Vec<usize> = match &args.plumtree_nodes {
        Some(sizes) => args.nodes.iter().copied().filter(|n| sizes.contains(n)).collect(),
        None => args.nodes.clone(),
    };
    let _ = writeln!(
        summary,
        "Plumtree (default `PlumtreeConfig`: lazy tick {} ms, GRAFT timeout {} ms, exchange every {} s) on the same overlays: \
         {} broadcasts without failures, then {} crashed at once, silently: {} broadcasts before the survivors notice, \
         {} after the links dropped and HyParView repaired its views; one broadcast every {} s from a random live node, \
         the handler's merge answered at once.\n",
        HyParViewSetup::default().broadcast.lazy_tick_period,
        HyParViewSetup::default().broadcast.graft_timeout,
        HyParViewSetup::default().broadcast.exchange_tick_period / 1000,
        pt_setup.steady_broadcasts,
        pt_setup.fractions.iter().map(|f| format!("{:.0}%", f * 100.0)).collect::<Vec<_>>().join(" or "),
        pt_setup.undetected_broadcasts,
        pt_setup.repaired_broadcasts,
        pt_setup.spacing_ms / 1000
    );
    summary.push_str("![reliability](reliability.png)\n![heal rounds](heal_rounds.png)\n![in-degree](indegree.png)\n");
    if !pt_sizes.is_empty() {
        summary.push_str("![Plumtree RMR](plumtree_rmr.png)\n![Plumtree reliability](plumtree_reliability.png)\n![Plumtree LDH](plumtree_ldh.png)\n");
    }
    summary.push_str("![scaling](scaling.png)\n\n");
    let mut plumtree: Vec<PlumtreeResult> = Vec::new();
    let mut plumtree_tables = String::new();
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
        if pt_sizes.contains(&nodes) {
            let t = Instant::now();
            let result = plumtree_experiment(&base, &pt_setup, threads);
            let crash_table = report::plumtree_crash_table(&result, &pt_setup);
            println!("{crash_table}");
            for crash in &result.crashes {
                write(&args.out, &report::plumtree_data_file(nodes, crash.fraction), &report::plumtree_data(&result, Some(crash)))?;
            }
            let _ = writeln!(plumtree_tables, "{crash_table}\nWall time of the Plumtree runs at {nodes} nodes: {:.1} s.\n", t.elapsed().as_secs_f64());
            plumtree.push(result);
        }
    }
    let partition_table = report::partition_table(&partitions);
    println!("{partition_table}");
    let _ = writeln!(summary, "{partition_table}");
    if !plumtree.is_empty() {
        let summary_table = report::plumtree_summary_table(&plumtree);
        let steady_table = report::plumtree_steady_table(&plumtree);
        println!("{summary_table}\n{steady_table}");
        let text = format!("{PLUMTREE_NOTES}\n{summary_table}\n{steady_table}\n{plumtree_tables}");
        write(&args.out, "plumtree.md", &text)?;
        let _ = writeln!(summary, "{text}");
    }
    let t = Instant::now();
    let scaling_rows = scaling(&args.scaling, NetConfig::default(), args.seed, threads);
    let scaling_table = format!("{}\n{}", report::scaling_table(&scaling_rows), report::client_server_table(&scaling_rows));
    println!("{scaling_table}");
    write(&args.out, "scaling.dat", &report::scaling_data(&scaling_rows))?;
    write(&args.out, "scaling.md", &scaling_table)?;
    let _ = writeln!(summary, "{scaling_table}\nWall time of the scaling runs: {:.1} s.\n", t.elapsed().as_secs_f64());
    let total = started.elapsed().as_secs_f64();
    let _ = writeln!(summary, "Total wall time: {total:.1} s.");
    write(&args.out, "README.md", &summary)?;
    let mut scripts = report::plot_scripts(&args.nodes);
    if !pt_sizes.is_empty() {
        scripts.extend(report::plumtree_plot_scripts(&pt_sizes, &pt_setup));
    }
    for (name, script) in scripts {
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

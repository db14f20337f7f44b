//! Markdown tables and gnuplot plots of the experiments' rows.
//!
//! Plots are drawn by gnuplot (Debian's `gnuplot-nox`) from whitespace-separated data files, so
//! the numbers behind every figure sit next to it. Without gnuplot the tables are still written
//! and [`plot`] says so instead of failing.
//!
//! ```
//! use partisan_sim::report::percent;
//! assert_eq!(percent(0.99949), "99.95");
//! ```

use crate::experiments::{CrashRow, PartitionRow, ScalingRow, ViewStats, REPAIR_WINDOW_MS};
use std::fmt::Write;
use std::path::Path;
use std::process::Command;

/// Why a plot could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("could not write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("gnuplot failed on {script}: {stderr}")]
    Gnuplot { script: String, stderr: String },
}

pub fn percent(x: f64) -> String {
    format!("{:.2}", x * 100.0)
}

fn rounds(r: Option<u32>) -> String {
    r.map_or("not within the run".to_owned(), |r| r.to_string())
}

/// Rounds shown as columns of the crash table (the last one is always shown too).
const SHOWN_ROUNDS: [usize; 3] = [1, 2, 3];

pub fn crash_table(nodes: usize, rows: &[CrashRow]) -> String {
    let last = rows.first().map_or(0, |r| r.reliability_rounds.len());
    let mut shown: Vec<usize> = SHOWN_ROUNDS.iter().copied().filter(|r| *r <= last).collect();
    if last > 0 && !shown.contains(&last) {
        shown.push(last);
    }
    let mut out = format!("### HyParView, {nodes} nodes: broadcast reliability (% of live nodes reached) after a crash\n\n");
    let _ = write!(out, "| crashed | live | no healing | comps | after {} s repair | comps |", REPAIR_WINDOW_MS / 1000);
    for r in &shown {
        let _ = write!(out, " round {r} |");
    }
    out.push_str(" comps (last) | heal rounds | asymmetric edges |\n|");
    for _ in 0..(9 + shown.len()) {
        out.push_str("---|");
    }
    out.push('\n');
    for row in rows {
        let _ = write!(
            out,
            "| {:.0}% | {} | {} | {} | {} | {} |",
            row.fraction * 100.0,
            row.live,
            percent(row.reliability_immediate),
            row.components_immediate,
            percent(row.reliability_repaired),
            row.components_repaired
        );
        for r in &shown {
            let _ = write!(out, " {} |", percent(row.reliability_rounds[r - 1]));
        }
        let _ = writeln!(
            out,
            " {} | {} | {} |",
            row.components_rounds.last().copied().unwrap_or(row.components_repaired),
            rounds(row.heal_rounds),
            row.asymmetric_edges
        );
    }
    out
}

/// Columns: crashed %, no healing, repaired, round 1, last round, heal rounds (NaN if never).
pub fn crash_data(rows: &[CrashRow]) -> String {
    let mut out = String::from("# crashed_pct no_healing repaired round1 last_round heal_rounds\n");
    for row in rows {
        let _ = writeln!(
            out,
            "{:.0} {} {} {} {} {}",
            row.fraction * 100.0,
            percent(row.reliability_immediate),
            percent(row.reliability_repaired),
            percent(row.reliability_rounds.first().copied().unwrap_or(row.reliability_repaired)),
            percent(row.reliability_rounds.last().copied().unwrap_or(row.reliability_repaired)),
            row.heal_rounds.map_or("NaN".to_owned(), |r| r.to_string())
        );
    }
    out
}

pub fn view_table(nodes: usize, stats: &ViewStats) -> String {
    let mut out = format!("### HyParView, {nodes} nodes: views after stabilization\n\n");
    let _ = writeln!(out, "| measure | value |\n|---|---|");
    let _ = writeln!(out, "| components | {} |", stats.components);
    let _ = writeln!(out, "| asymmetric active-view edges | {} |", stats.asymmetric_edges);
    let _ = writeln!(out, "| broadcast reliability | {}% |", percent(stats.reliability));
    for (what, d) in [("active view size (out-degree)", &stats.out_degree), ("in-degree", &stats.in_degree)] {
        let _ = writeln!(out, "| {what}: mean ± std dev | {:.2} ± {:.2} |", d.mean, d.std_dev);
        let _ = writeln!(out, "| {what}: min / max | {} / {} |", d.min, d.max);
    }
    let _ = writeln!(out, "\nIn-degree distribution:\n\n| in-degree | nodes | share |\n|---|---|---|");
    let total = stats.in_degree.histogram.iter().sum::<usize>().max(1) as f64;
    for (degree, count) in stats.in_degree.histogram.iter().enumerate().filter(|(_, c)| **c > 0) {
        let _ = writeln!(out, "| {degree} | {count} | {}% |", percent(*count as f64 / total));
    }
    out
}

/// Columns: in-degree, share of nodes (%).
pub fn degree_data(stats: &ViewStats) -> String {
    let total = stats.in_degree.histogram.iter().sum::<usize>().max(1) as f64;
    let mut out = String::from("# in_degree share_pct\n");
    for (degree, count) in stats.in_degree.histogram.iter().enumerate() {
        let _ = writeln!(out, "{degree} {}", percent(*count as f64 / total));
    }
    out
}

pub fn partition_table(rows: &[PartitionRow]) -> String {
    let mut out = String::from("### HyParView: healing after a partition into two halves\n\n");
    out.push_str("| nodes | partition held | components during | rounds to heal after | reliability then |\n|---|---|---|---|---|\n");
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} s | {} | {} | {}% |",
            row.nodes,
            row.duration_ms / 1000,
            row.components_during,
            rounds(row.heal_rounds),
            percent(row.reliability_after)
        );
    }
    out
}

pub fn scaling_table(rows: &[ScalingRow]) -> String {
    let mut out = String::from("### Membership cost: full mesh vs HyParView\n\n");
    out.push_str("Links = connections a node dialed (full mesh: default + membership channel to every member; ");
    out.push_str("HyParView: membership link to each active peer). Frames = control frames sent by all nodes.\n\n");
    out.push_str("| nodes | mesh links/node | mesh frames/join | mesh frames/leave | HyParView links/node | HyParView frames/join | HyParView frames/leave |\n");
    out.push_str("|---|---|---|---|---|---|---|\n");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {:.1} | {} | {} | {:.1} | {} | {} |",
            r.nodes,
            r.mesh_links_per_node,
            r.mesh_frames_per_join,
            r.mesh_frames_per_leave,
            r.hyparview_links_per_node,
            r.hyparview_frames_per_join,
            r.hyparview_frames_per_leave
        );
    }
    out
}

/// Columns: nodes, mesh links/node, mesh frames/join, HyParView links/node, HyParView frames/join.
pub fn scaling_data(rows: &[ScalingRow]) -> String {
    let mut out = String::from("# nodes mesh_links mesh_join hv_links hv_join\n");
    for r in rows {
        let _ = writeln!(
            out,
            "{} {:.2} {} {:.2} {}",
            r.nodes, r.mesh_links_per_node, r.mesh_frames_per_join, r.hyparview_links_per_node, r.hyparview_frames_per_join
        );
    }
    out
}

/// The gnuplot scripts for the figures, given the cluster sizes of the crash runs.
pub fn plot_scripts(sizes: &[usize]) -> Vec<(&'static str, String)> {
    let head = |png: &str, title: &str| {
        format!("set terminal pngcairo size 1000,650 noenhanced\nset output '{png}'\nset title '{title}'\nset grid\nset key bottom left box opaque\nset datafile missing 'NaN'\n")
    };
    let series = |column: usize, label: &str, dash: usize| -> Vec<String> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("'crash_{n}.dat' using 1:{column} with linespoints dt {dash} lc {} title '{n} nodes, {label}'", i + 1))
            .collect()
    };
    let mut reliability = head("reliability.png", "HyParView: broadcast reliability after a crash of a fraction of the nodes at once");
    reliability.push_str("set xlabel 'nodes crashed at once (%)'\nset ylabel 'live nodes reached (%)'\nset yrange [0:105]\n");
    let mut lines = series(2, "no healing", 3);
    lines.extend(series(3, &format!("after {} s repair", REPAIR_WINDOW_MS / 1000), 2));
    lines.extend(series(4, "after 1 round", 4));
    lines.extend(series(5, "after last round", 1));
    let _ = writeln!(reliability, "plot {}", lines.join(", \\\n  "));

    let mut heal = head("heal_rounds.png", "HyParView: shuffle rounds until one component reaches every live node");
    heal.push_str("set xlabel 'nodes crashed at once (%)'\nset ylabel 'rounds (0 = within the repair window)'\nset yrange [-0.5:*]\n");
    let _ = writeln!(heal, "plot {}", series(6, "heal rounds", 1).join(", \\\n  "));

    let mut degree = head("indegree.png", "HyParView: active-view in-degree distribution after stabilization");
    degree.push_str("set xlabel 'in-degree'\nset ylabel 'nodes (%)'\nset style fill solid 0.5\nset boxwidth 0.4\n");
    let bars: Vec<String> = sizes
        .iter()
        .enumerate()
        .map(|(i, n)| format!("'indegree_{n}.dat' using ($1+{:.2}):2 with boxes lc {} title '{n} nodes'", i as f64 * 0.4 - 0.2, i + 1))
        .collect();
    let _ = writeln!(degree, "plot {}", bars.join(", \\\n  "));

    let mut scaling = head("scaling.png", "Membership cost vs cluster size: full mesh vs HyParView");
    scaling.push_str("set xlabel 'nodes'\nset logscale y\nset ylabel 'count (log scale)'\n");
    scaling.push_str("plot 'scaling.dat' using 1:2 with linespoints title 'full mesh: links per node', \\\n");
    scaling.push_str("  'scaling.dat' using 1:3 with linespoints title 'full mesh: frames per join', \\\n");
    scaling.push_str("  'scaling.dat' using 1:4 with linespoints title 'HyParView: links per node', \\\n");
    scaling.push_str("  'scaling.dat' using 1:5 with linespoints title 'HyParView: frames per join'\n");
    vec![("reliability.gp", reliability), ("heal_rounds.gp", heal), ("indegree.gp", degree), ("scaling.gp", scaling)]
}

/// Writes `script` into `dir` and runs gnuplot on it there. Returns `Ok(false)` when gnuplot
/// is not installed.
pub fn plot(dir: &Path, name: &str, script: &str) -> Result<bool, PlotError> {
    let path = dir.join(name);
    std::fs::write(&path, script).map_err(|source| PlotError::Write { path: path.display().to_string(), source })?;
    let output = match Command::new("gnuplot").arg(name).current_dir(dir).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(PlotError::Gnuplot { script: name.to_owned(), stderr: e.to_string() }),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        return Err(PlotError::Gnuplot { script: name.to_owned(), stderr });
    }
    Ok(true)
}

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

use crate::broadcast::{summarize, BroadcastRow, CrashRun, PlumtreeResult, PlumtreeSetup};
use crate::experiments::{CrashRow, PartitionRow, ScalingRow, ViewStats, REPAIR_WINDOW_MS, SERVER_FRACTION};
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
    out.push_str("HyParView: membership and default channel to each active peer). Frames = control frames sent by all nodes.\n\n");
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

pub fn client_server_table(rows: &[ScalingRow]) -> String {
    let mut out = format!(
        "### Membership cost: client-server ({:.0}% servers) next to the full mesh\n\n",
        SERVER_FRACTION * 100.0
    );
    out.push_str("Servers link to every node, clients only to the servers. Links = connections a node dialed (default + ");
    out.push_str("membership channel, so 2 per peer); peers = distinct nodes a node has a link up to. The change measured ");
    out.push_str("is the join, then the leave, of one client; frames = control frames sent by all nodes.\n\n");
    out.push_str("| nodes | servers | mesh links/node | server links/node | client links/node | client peers (min–max) | ");
    out.push_str("mesh frames/join | client-server frames/join | mesh frames/leave | client-server frames/leave |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let cs = &r.client_server;
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.1} | {:.1} | {}–{} | {} | {} | {} | {} |",
            r.nodes,
            cs.servers,
            r.mesh_links_per_node,
            cs.server_links_per_node,
            cs.client_links_per_node,
            cs.client_peers.0,
            cs.client_peers.1,
            r.mesh_frames_per_join,
            cs.frames_per_join,
            r.mesh_frames_per_leave,
            cs.frames_per_leave
        );
    }
    out
}

/// Columns: nodes, mesh links/node, mesh frames/join, HyParView links/node, HyParView
/// frames/join, client-server: server links/node, client links/node, frames/join, frames/leave;
/// mesh frames/leave.
pub fn scaling_data(rows: &[ScalingRow]) -> String {
    let mut out = String::from("# nodes mesh_links mesh_join hv_links hv_join cs_server_links cs_client_links cs_join cs_leave mesh_leave\n");
    for r in rows {
        let cs = &r.client_server;
        let _ = writeln!(
            out,
            "{} {:.2} {} {:.2} {} {:.2} {:.2} {} {} {}",
            r.nodes,
            r.mesh_links_per_node,
            r.mesh_frames_per_join,
            r.hyparview_links_per_node,
            r.hyparview_frames_per_join,
            cs.server_links_per_node,
            cs.client_links_per_node,
            cs.frames_per_join,
            cs.frames_per_leave,
            r.mesh_frames_per_leave
        );
    }
    out
}

fn rmr(r: Option<f64>) -> String {
    r.map_or("–".to_owned(), |r| format!("{r:.3}"))
}

/// Per broadcast without failures, one column group per overlay size.
pub fn plumtree_steady_table(results: &[PlumtreeResult]) -> String {
    let mut out = String::from("### Plumtree over HyParView: broadcasts in steady state\n\n");
    out.push_str("Delivered = % of the live nodes that delivered the broadcast within the spacing; RMR = payload frames / ");
    out.push_str("(nodes reached − 1) − 1 (0: each node got the payload once); LDH = last delivery hop; tree = eager links ");
    out.push_str("between live nodes (a spanning tree has live − 1).\n\n| # |");
    for r in results {
        let _ = write!(out, " {n}: delivered % | {n}: RMR | {n}: LDH | {n}: tree |", n = r.nodes);
    }
    out.push_str("\n|---|");
    out.push_str(&"---|---|---|---|".repeat(results.len()));
    out.push('\n');
    let count = results.iter().map(|r| r.steady.len()).max().unwrap_or(0);
    for i in 0..count {
        let _ = write!(out, "| {} |", i + 1);
        for r in results {
            match r.steady.get(i) {
                Some(b) => {
                    let _ = write!(out, " {} | {} | {} | {} |", percent(b.reliability()), rmr(b.rmr()), b.ldh(), b.tree_links);
                }
                None => out.push_str(" | | | |"),
            }
        }
        out.push('\n');
    }
    out
}

/// Per broadcast after each crash of one overlay, one column group per crashed fraction.
pub fn plumtree_crash_table(result: &PlumtreeResult, setup: &PlumtreeSetup) -> String {
    let mut out = format!(
        "### Plumtree over HyParView, {} nodes: broadcasts after a crash\n\nThe crash comes after broadcast {}; \
         the survivors notice it {} s later (then {} s of HyParView repair before the next broadcast). \
         Delivered = within the {} s until the next broadcast; by end = by the end of the run; GRAFTs = requests \
         for a missing message (tree repairs); swaps = tree optimisations.\n\n| # | phase |",
        result.nodes,
        setup.steady_broadcasts,
        setup.detection_ms() / 1000,
        REPAIR_WINDOW_MS / 1000,
        setup.spacing_ms / 1000
    );
    for c in &result.crashes {
        let _ = write!(
            out,
            " {p:.0}%: delivered % | {p:.0}%: by end % | {p:.0}%: RMR | {p:.0}%: LDH | {p:.0}%: GRAFTs | {p:.0}%: swaps |",
            p = c.fraction * 100.0
        );
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---|---|---|---|---|---|".repeat(result.crashes.len()));
    out.push('\n');
    let count = result.crashes.iter().map(|c| c.rows.len()).max().unwrap_or(0);
    for i in 0..count {
        let Some(first) = result.crashes.iter().find_map(|c| c.rows.get(i)) else { continue };
        let _ = write!(out, "| {} | {} |", first.index, first.phase.label());
        for c in &result.crashes {
            match c.rows.get(i) {
                Some(b) => {
                    let _ = write!(
                        out,
                        " {} | {} | {} | {} | {} | {} |",
                        percent(b.reliability()),
                        percent(b.reliability_by_end()),
                        rmr(b.rmr()),
                        b.ldh(),
                        b.grafts,
                        b.swaps
                    );
                }
                None => out.push_str(" | | | | | |"),
            }
        }
        out.push('\n');
    }
    out
}

/// Per overlay size, crashed fraction and phase: reliability, RMR and LDH in aggregate.
pub fn plumtree_summary_table(results: &[PlumtreeResult]) -> String {
    let mut out = String::from("### Plumtree over HyParView: summary per phase\n\n");
    out.push_str("Delivered = within the spacing between broadcasts; by end = by the end of the run (late, not lost); ");
    out.push_str("RMR first = the phase's first broadcast; RMR rest = mean over its other broadcasts; GRAFTs = requests ");
    out.push_str("for a missing message (tree repairs); swaps = tree optimisations (GRAFT + PRUNE).\n\n");
    out.push_str("| nodes | crashed | phase | broadcasts | delivered % min | delivered % mean | by end % min | RMR first | RMR rest | LDH max | LDH mean | GRAFTs | swaps |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    let mut line = |nodes: usize, crashed: String, rows: &[BroadcastRow]| {
        for p in summarize(rows) {
            let _ = writeln!(
                out,
                "| {nodes} | {crashed} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {} |",
                p.phase.label(),
                p.broadcasts,
                percent(p.min_reliability),
                percent(p.mean_reliability),
                percent(p.min_reliability_by_end),
                rmr(p.first_rmr),
                rmr(p.rest_rmr),
                p.max_ldh,
                p.mean_ldh,
                p.grafts,
                p.swaps
            );
        }
    };
    for r in results {
        line(r.nodes, "0%".to_owned(), &r.steady);
        for c in &r.crashes {
            line(r.nodes, format!("{:.0}% ({})", c.fraction * 100.0, c.crashed), &c.rows);
        }
    }
    out
}

/// Columns: broadcast index, delivered %, RMR (NaN if under two nodes reached), LDH, repair
/// GRAFTs, swaps, tree links: the steady broadcasts, then those of `crash` if given.
pub fn plumtree_data(result: &PlumtreeResult, crash: Option<&CrashRun>) -> String {
    let mut out = String::from("# index delivered_pct rmr ldh grafts swaps tree_links\n");
    for b in result.steady.iter().chain(crash.into_iter().flat_map(|c| c.rows.iter())) {
        let _ = writeln!(
            out,
            "{} {} {} {} {} {} {}",
            b.index,
            percent(b.reliability()),
            b.rmr().map_or("NaN".to_owned(), |r| format!("{r:.4}")),
            b.ldh(),
            b.grafts,
            b.swaps,
            b.tree_links
        );
    }
    out
}

/// Name of the data file of one Plumtree run (`fraction` 0 = the steady broadcasts only).
pub fn plumtree_data_file(nodes: usize, fraction: f64) -> String {
    format!("plumtree_{nodes}_{:.0}.dat", fraction * 100.0)
}

/// The gnuplot scripts of the Plumtree figures: delivered %, RMR and LDH per broadcast, one
/// series per overlay size and crashed fraction, the crash and its detection marked.
pub fn plumtree_plot_scripts(sizes: &[usize], setup: &PlumtreeSetup) -> Vec<(&'static str, String)> {
    let crash_x = f64::from(setup.steady_broadcasts) + 0.5;
    let detect_x = crash_x + f64::from(setup.undetected_broadcasts);
    let marks = format!(
        "set arrow from {crash_x},graph 0 to {crash_x},graph 1 nohead dt 2 lc rgb 'gray40'\n\
         set arrow from {detect_x},graph 0 to {detect_x},graph 1 nohead dt 3 lc rgb 'gray40'\n\
         set label 'crash' at {crash_x},graph 0.97 right offset -0.5,0\n\
         set label 'detected' at {detect_x},graph 0.97 left offset 0.5,0\n\
         set xlabel 'broadcast (one every {} s from a random live node)'\n",
        setup.spacing_ms / 1000
    );
    let series = |column: usize| -> String {
        let mut lines = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            for (j, f) in setup.fractions.iter().enumerate() {
                lines.push(format!(
                    "'{}' using 1:{column} with linespoints dt {} lc {} pt {} title '{n} nodes, {:.0}% crashed'",
                    plumtree_data_file(*n, *f),
                    j + 1,
                    i + 1,
                    j + 6,
                    f * 100.0
                ));
            }
        }
        format!("plot {}\n", lines.join(", \\\n  "))
    };
    let mut reliability = plot_head("plumtree_reliability.png", "Plumtree over HyParView: live nodes delivering each broadcast");
    reliability.push_str(&marks);
    reliability.push_str("set ylabel 'live nodes delivered (%)'\nset yrange [*:100.5]\n");
    reliability.push_str(&series(2));
    let mut rmr = plot_head("plumtree_rmr.png", "Plumtree over HyParView: relative message redundancy per broadcast");
    rmr.push_str(&marks);
    rmr.push_str("set key at graph 0.5,graph 0.97 right top box opaque\nset ylabel 'RMR (0 = each node receives the payload once)'\nset yrange [-0.05:*]\n");
    rmr.push_str(&series(3));
    let mut ldh = plot_head("plumtree_ldh.png", "Plumtree over HyParView: last delivery hop per broadcast");
    ldh.push_str(&marks);
    ldh.push_str("set key at graph 0.5,graph 0.97 right top box opaque\nset ylabel 'last delivery hop'\nset yrange [0:*]\n");
    ldh.push_str(&series(4));
    vec![("plumtree_reliability.gp", reliability), ("plumtree_rmr.gp", rmr), ("plumtree_ldh.gp", ldh)]
}

/// The common head of every gnuplot script.
fn plot_head(png: &str, title: &str) -> String {
    format!("set terminal pngcairo size 1000,650 noenhanced\nset output '{png}'\nset title '{title}'\nset grid\nset key bottom left box opaque\nset datafile missing 'NaN'\n")
}

/// The gnuplot scripts for the figures, given the cluster sizes of the crash runs.
pub fn plot_scripts(sizes: &[usize]) -> Vec<(&'static str, String)> {
    let head = plot_head;
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

    let mut scaling = head("scaling.png", "Membership cost vs cluster size: full mesh, HyParView, client-server");
    scaling.push_str("set xlabel 'nodes'\nset logscale y\nset ylabel 'count (log scale)'\nset key outside below box\nset size ratio 0.45\n");
    scaling.push_str("plot 'scaling.dat' using 1:2 with linespoints title 'full mesh: links per node', \\\n");
    scaling.push_str("  'scaling.dat' using 1:3 with linespoints title 'full mesh: frames per join', \\\n");
    scaling.push_str("  'scaling.dat' using 1:4 with linespoints title 'HyParView: links per node', \\\n");
    scaling.push_str("  'scaling.dat' using 1:5 with linespoints title 'HyParView: frames per join', \\\n");
    let _ = writeln!(
        scaling,
        "  'scaling.dat' using 1:6 with linespoints dt 2 title 'client-server ({pct:.0}% servers): server links per node (= full mesh)', \\\n  \
         'scaling.dat' using 1:7 with linespoints title 'client-server ({pct:.0}% servers): client links per node', \\\n  \
         'scaling.dat' using 1:8 with linespoints title 'client-server ({pct:.0}% servers): frames per client join'",
        pct = SERVER_FRACTION * 100.0
    );
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

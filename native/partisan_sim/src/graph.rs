//! Metrics over the overlay graph: who forwards to whom.
//!
//! An edge u → v means v is in u's view (`Overlay::members`, which is the active view under
//! HyParView and every member under the full mesh). Flooding a broadcast over those edges reaches
//! exactly the nodes reachable from the source, which is what the HyParView paper's reliability
//! measures (fanout = active view size, every node forwards once to every neighbour).
//!
//! ```
//! use partisan_sim::graph::Graph;
//! // 0 <-> 1, 2 alone
//! let g = Graph { adjacency: vec![vec![1], vec![0], vec![]], alive: vec![true; 3] };
//! assert_eq!(g.components(), 2);
//! assert!((g.reliability(&[0]) - 2.0 / 3.0).abs() < 1e-9);
//! ```

use crate::net::{App, NodeId, Sim};
use partisan_core::overlay::Overlay;

/// The overlay graph restricted to live nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    /// Out-neighbours per node (live ones only).
    pub adjacency: Vec<Vec<NodeId>>,
    pub alive: Vec<bool>,
}

/// Summary of a degree distribution.
#[derive(Debug, Clone, PartialEq)]
pub struct DegreeStats {
    /// `histogram[d]` = number of live nodes of degree d.
    pub histogram: Vec<usize>,
    pub mean: f64,
    pub std_dev: f64,
    pub min: usize,
    pub max: usize,
}

impl Graph {
    pub fn of<O: Overlay, A: App>(sim: &Sim<O, A>) -> Graph {
        let count = sim.len();
        let mut adjacency = vec![Vec::new(); count];
        let alive: Vec<bool> = (0..count as NodeId).map(|id| sim.is_alive(id)).collect();
        for (id, out) in adjacency.iter_mut().enumerate() {
            let Some(node) = sim.node(id as NodeId) else { continue };
            for name in node.members() {
                if let Some(peer) = sim.id_of(&name) {
                    if peer != id as NodeId && alive[peer as usize] {
                        out.push(peer);
                    }
                }
            }
        }
        Graph { adjacency, alive }
    }

    pub fn live_count(&self) -> usize {
        self.alive.iter().filter(|a| **a).count()
    }

    /// Mean fraction of live nodes a flood from each source reaches.
    pub fn reliability(&self, sources: &[NodeId]) -> f64 {
        let live = self.live_count();
        if sources.is_empty() || live == 0 {
            return 0.0;
        }
        let mut seen = vec![false; self.alive.len()];
        let mut stack = Vec::new();
        let mut total = 0.0;
        for &source in sources {
            seen.iter_mut().for_each(|s| *s = false);
            seen[source as usize] = true;
            stack.push(source);
            let mut reached = 1;
            while let Some(u) = stack.pop() {
                for &v in &self.adjacency[u as usize] {
                    if !seen[v as usize] {
                        seen[v as usize] = true;
                        reached += 1;
                        stack.push(v);
                    }
                }
            }
            total += reached as f64 / live as f64;
        }
        total / sources.len() as f64
    }

    /// Connected components of live nodes, edges taken in either direction.
    pub fn components(&self) -> usize {
        let mut parent: Vec<usize> = (0..self.alive.len()).collect();
        fn find(parent: &mut [usize], mut x: usize) -> usize {
            while parent[x] != x {
                parent[x] = parent[parent[x]];
                x = parent[x];
            }
            x
        }
        for (u, out) in self.adjacency.iter().enumerate() {
            for &v in out {
                let (a, b) = (find(&mut parent, u), find(&mut parent, v as usize));
                parent[a] = b;
            }
        }
        (0..self.alive.len()).filter(|&u| self.alive[u] && find(&mut parent, u) == u).count()
    }

    /// Edges u → v without v → u.
    pub fn asymmetric_edges(&self) -> usize {
        self.adjacency
            .iter()
            .enumerate()
            .flat_map(|(u, out)| out.iter().map(move |&v| (u as NodeId, v)))
            .filter(|&(u, v)| !self.adjacency[v as usize].contains(&u))
            .count()
    }

    pub fn in_degrees(&self) -> DegreeStats {
        let mut degree = vec![0usize; self.alive.len()];
        for out in &self.adjacency {
            for &v in out {
                degree[v as usize] += 1;
            }
        }
        Self::stats(degree.into_iter().enumerate().filter(|(u, _)| self.alive[*u]).map(|(_, d)| d))
    }

    pub fn out_degrees(&self) -> DegreeStats {
        Self::stats(self.adjacency.iter().enumerate().filter(|(u, _)| self.alive[*u]).map(|(_, out)| out.len()))
    }

    fn stats(degrees: impl Iterator<Item = usize>) -> DegreeStats {
        let degrees: Vec<usize> = degrees.collect();
        let max = degrees.iter().copied().max().unwrap_or(0);
        let min = degrees.iter().copied().min().unwrap_or(0);
        let mut histogram = vec![0; max + 1];
        for &d in &degrees {
            histogram[d] += 1;
        }
        let n = degrees.len().max(1) as f64;
        let mean = degrees.iter().sum::<usize>() as f64 / n;
        let var = degrees.iter().map(|&d| (d as f64 - mean).powi(2)).sum::<f64>() / n;
        DegreeStats { histogram, mean, std_dev: var.sqrt(), min, max }
    }
}

//! The fleet's side: every node's families labelled with the node's id and
//! merged into one exposition, one HELP and TYPE per family (the text
//! format requires a family's samples to be together).

use crate::exposition::{encode, Family};

/// The label the fleet adds to every sample of a node.
pub const NODE_LABEL: &str = "node";

/// Family names the fleet writes itself; a node may not send them, so a
/// node can never speak for another node's reachability.
pub const FLEET_PREFIX: &str = "lockstep_fleet_";

/// Why a node's families were not merged (nothing of that node was).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeError {
    /// A sample already has the `node` label.
    LabelPresent { family: String },
    /// A family whose type differs from the same family of an earlier node.
    Conflict { family: String },
    /// A node sent a family of the fleet's own (`lockstep_fleet_*`).
    Reserved { family: String },
}

impl std::fmt::Display for MergeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MergeError::LabelPresent { family } => write!(
                f,
                "family {family} already has a `{NODE_LABEL}` label: the fleet adds it"
            ),
            MergeError::Conflict { family } => write!(
                f,
                "family {family} has another type than on the nodes merged before"
            ),
            MergeError::Reserved { family } => write!(
                f,
                "family {family} is the fleet's own ({FLEET_PREFIX}*): a node may not send it"
            ),
        }
    }
}

impl std::error::Error for MergeError {}

/// Families merged from many nodes, in order of first appearance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Merged {
    families: Vec<Family>,
}

impl Merged {
    pub fn new() -> Merged {
        Merged::default()
    }

    /// Adds one node's families, every sample labelled `node="<node>"`
    /// (first). All or nothing: a refused node leaves the merge as it was.
    pub fn add_node(&mut self, node: &str, families: Vec<Family>) -> Result<(), MergeError> {
        for f in &families {
            if f.name.starts_with(FLEET_PREFIX) {
                return Err(MergeError::Reserved {
                    family: f.name.clone(),
                });
            }
            if f.samples
                .iter()
                .any(|s| s.labels.iter().any(|(l, _)| l == NODE_LABEL))
            {
                return Err(MergeError::LabelPresent {
                    family: f.name.clone(),
                });
            }
            if self
                .families
                .iter()
                .any(|m| m.name == f.name && m.kind != f.kind)
            {
                return Err(MergeError::Conflict {
                    family: f.name.clone(),
                });
            }
        }
        for mut f in families {
            for s in &mut f.samples {
                s.labels
                    .insert(0, (NODE_LABEL.to_string(), node.to_string()));
            }
            self.add_family(f);
        }
        Ok(())
    }

    /// Adds one of the fleet's own families as it is (its samples already
    /// labelled).
    pub fn add_fleet(&mut self, family: Family) -> Result<(), MergeError> {
        if self
            .families
            .iter()
            .any(|m| m.name == family.name && m.kind != family.kind)
        {
            return Err(MergeError::Conflict {
                family: family.name,
            });
        }
        self.add_family(family);
        Ok(())
    }

    fn add_family(&mut self, f: Family) {
        match self.families.iter_mut().find(|m| m.name == f.name) {
            // The first node's help text stays (a newer node may word it
            // differently; the type is what must agree).
            Some(m) => m.samples.extend(f.samples),
            None => self.families.push(f),
        }
    }

    pub fn families(&self) -> &[Family] {
        &self.families
    }

    pub fn encode(&self) -> String {
        encode(&self.families)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse, Kind, NodeMetrics, Outcome, Sample};
    use std::time::Duration;

    fn node(jobs: u64) -> Vec<Family> {
        let m = NodeMetrics::new("0.1.0");
        let d = m.device("aa").unwrap();
        for _ in 0..jobs {
            d.job_finished(Outcome::Ok, Duration::from_millis(5));
        }
        parse(&m.exposition("b")).unwrap()
    }

    #[test]
    fn nodes_merge_into_one_family_each_labelled_by_node() {
        let mut merged = Merged::new();
        merged.add_node("n1", node(1)).unwrap();
        merged.add_node("n2", node(2)).unwrap();
        merged
            .add_fleet(Family {
                name: "lockstep_fleet_node_up".into(),
                help: "up".into(),
                kind: Kind::Gauge,
                samples: vec![Sample {
                    name: "lockstep_fleet_node_up".into(),
                    labels: vec![("node".into(), "n1".into())],
                    value: 1.0,
                }],
            })
            .unwrap();
        let text = merged.encode();
        assert_eq!(
            text.matches("# TYPE lockstep_jobs_total counter\n").count(),
            1
        );
        assert!(text.contains(
            "lockstep_jobs_total{node=\"n1\",device=\"aa\",outcome=\"ok\"} 1\n\
             lockstep_jobs_total{node=\"n1\",device=\"aa\",outcome=\"failed\"} 0\n"
        ));
        assert!(text.contains("lockstep_jobs_total{node=\"n2\",device=\"aa\",outcome=\"ok\"} 2\n"));
        // The merge is itself a valid exposition, with every series once.
        let families = parse(&text).unwrap();
        assert_eq!(families.len(), node(0).len() + 1);
    }

    #[test]
    fn a_node_that_cannot_be_merged_leaves_the_merge_unchanged() {
        let mut merged = Merged::new();
        merged.add_node("n1", node(1)).unwrap();
        let before = merged.clone();

        let mut relabelled = node(1);
        relabelled[1].samples[0]
            .labels
            .push(("node".into(), "x".into()));
        assert!(matches!(
            merged.add_node("n2", relabelled),
            Err(MergeError::LabelPresent { .. })
        ));
        let mut retyped = node(1);
        retyped[1].kind = Kind::Gauge;
        assert!(matches!(
            merged.add_node("n2", retyped),
            Err(MergeError::Conflict { .. })
        ));
        let mut spoof = node(1);
        spoof[0].name = "lockstep_fleet_node_up".into();
        assert!(matches!(
            merged.add_node("n2", spoof),
            Err(MergeError::Reserved { .. })
        ));
        assert_eq!(merged, before);
    }
}

//! Ordering the steps of a stage by `after:`.
//!
//! Steps keep their source order (files lexically, steps in file order) except that a step
//! waits for every step named in its `after:` list. Kahn's algorithm, always taking the
//! earliest ready step, so configs without `after` run exactly in source order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The result of ordering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ordered {
    /// Indices in run order (steps in a cycle are left out).
    pub order: Vec<usize>,
    /// Steps that are in, or wait on, a dependency cycle, in source order.
    pub blocked: Vec<usize>,
    /// One cycle, as step names, first name repeated at the end (for the error message).
    pub cycle: Vec<String>,
    /// `(step, name)` for `after` names that match no step of the stage.
    pub unknown: Vec<(usize, String)>,
}

/// `names[i]` is step i's name, `ids[i]` its yip id (`<file or config name>.<step name>`),
/// `after[i]` the names or ids it waits for.
pub(crate) fn order(names: &[String], ids: &[String], after: &[Vec<String>]) -> Ordered {
    let n = names.len();
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut unknown = Vec::new();
    for (i, wants) in after.iter().enumerate() {
        for w in wants {
            let found: Vec<usize> = (0..n)
                .filter(|&j| j != i && (names[j] == *w || ids.get(j) == Some(w)))
                .collect();
            if found.is_empty() {
                unknown.push((i, w.clone()));
            }
            deps[i].extend(found);
        }
    }
    let mut indegree: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| indegree[i] == 0).map(Reverse).collect();
    let mut out = Vec::with_capacity(n);
    while let Some(Reverse(i)) = ready.pop() {
        out.push(i);
        for &d in &dependents[i] {
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.push(Reverse(d));
            }
        }
    }
    let blocked: Vec<usize> = (0..n).filter(|&i| indegree[i] > 0).collect();
    let cycle = find_cycle(&deps, &blocked, names);
    Ordered {
        order: out,
        blocked,
        cycle,
        unknown,
    }
}

/// Walk dependencies among blocked steps until a step repeats: that loop is a cycle.
fn find_cycle(deps: &[Vec<usize>], blocked: &[usize], names: &[String]) -> Vec<String> {
    let Some(&start) = blocked.first() else {
        return Vec::new();
    };
    let mut path = vec![start];
    let mut cur = start;
    loop {
        // Every blocked step waits on at least one other blocked step.
        let Some(&next) = deps[cur].iter().find(|d| blocked.contains(d)) else {
            return Vec::new();
        };
        if let Some(pos) = path.iter().position(|&p| p == next) {
            let mut cycle: Vec<String> = path[pos..].iter().map(|&i| names[i].clone()).collect();
            cycle.push(names[next].clone());
            return cycle;
        }
        path.push(next);
        cur = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn keeps_source_order_without_after() {
        let o = order(&s(&["a", "b", "c"]), &[], &[vec![], vec![], vec![]]);
        assert_eq!(o.order, vec![0, 1, 2]);
        assert!(o.blocked.is_empty());
    }

    #[test]
    fn after_moves_a_step_later() {
        let o = order(&s(&["a", "b", "c"]), &[], &[s(&["c"]), vec![], vec![]]);
        assert_eq!(o.order, vec![1, 2, 0]);
    }

    #[test]
    fn cycles_are_found() {
        let o = order(
            &s(&["a", "b", "c", "d"]),
            &[],
            &[s(&["b"]), s(&["a"]), vec![], s(&["a"])],
        );
        assert_eq!(o.order, vec![2]);
        assert_eq!(o.blocked, vec![0, 1, 3]);
        assert_eq!(o.cycle, s(&["a", "b", "a"]));
    }

    #[test]
    fn unknown_names_are_reported() {
        let o = order(&s(&["a"]), &[], &[s(&["zz"])]);
        assert_eq!(o.order, vec![0]);
        assert_eq!(o.unknown, vec![(0, "zz".to_string())]);
    }
}

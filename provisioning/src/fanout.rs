//! Work on every node of a fleet at once, within a bound: what a push and
//! a metrics scrape share.

use std::sync::Mutex;

use lockstep_limits::FLEET_PUSH_PARALLELISM;

/// Runs `work` on every item, on at most `FLEET_PUSH_PARALLELISM` threads;
/// `finished(count, result)` is called as each one ends (one call at a
/// time, `count` finished so far). The results come back in `items`'
/// order, whatever order they finished in.
pub(crate) fn each<T: Sync, R: Send>(
    items: &[T],
    work: impl Fn(&T) -> R + Sync,
    finished: impl Fn(usize, &R) + Sync,
) -> Vec<R> {
    let next = Mutex::new(0usize);
    let done = Mutex::new(Vec::with_capacity(items.len()));
    let workers = FLEET_PUSH_PARALLELISM.min(items.len());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = {
                    let mut n = next.lock().unwrap_or_else(|e| e.into_inner());
                    let i = *n;
                    *n += 1;
                    i
                };
                let Some(item) = items.get(i) else { break };
                let result = work(item);
                let mut done = done.lock().unwrap_or_else(|e| e.into_inner());
                finished(done.len() + 1, &result);
                done.push((i, result));
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_item_once_in_order_with_a_running_count() {
        let items: Vec<u32> = (0..100).collect();
        let counts = std::sync::Mutex::new(Vec::new());
        let out = super::each(&items, |&x| x * 2, |n, _| counts.lock().unwrap().push(n));
        assert_eq!(out, items.iter().map(|x| x * 2).collect::<Vec<_>>());
        assert_eq!(*counts.lock().unwrap(), (1..=100).collect::<Vec<usize>>());
        assert!(super::each(&[] as &[u32], |&x| x, |_, _| ()).is_empty());
    }
}

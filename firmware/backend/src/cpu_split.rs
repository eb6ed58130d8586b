//! Every core for the CPU reference's elementwise and row ops.
//!
//! An elementwise op computes each output element from the same-index
//! elements of its operands, and a row op each output row from the same
//! row of its operands, so running contiguous pieces on separate threads
//! and concatenating the pieces in order gives the bits of one call on the
//! whole: no sum ever crosses a piece boundary (the tests below hold that
//! for every op split here). Reductions across rows (`sum_cols`, the mean
//! in `cross_entropy` and its backward) are never split.

use std::ops::Range;

/// What one unit of work costs, roughly, in cheap float operations: decides
/// when a split pays for the threads it starts (about 20 µs each).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cost {
    /// A few adds and multiplies per element (add, axpby, relu, bias_add).
    Cheap,
    /// Software division, square root or a transcendental twin per element
    /// (div, exp, gelu, adam_update) or per element of a row.
    Math,
}

impl Cost {
    /// Elements below which one thread does the work.
    fn split_min_elements(self) -> usize {
        match self {
            Cost::Cheap => 1 << 20,
            Cost::Math => 1 << 13,
        }
    }
}

/// `f` over `units` units (elements or rows) of `unit_elements` elements
/// each, in up to `threads` contiguous pieces, concatenated in order. `f`
/// gets a range of units and returns the outputs of exactly those units.
pub(crate) fn split(
    threads: usize,
    units: usize,
    unit_elements: usize,
    cost: Cost,
    f: impl Fn(Range<usize>) -> Vec<f32> + Sync,
) -> Vec<f32> {
    let threads = pieces(threads, units, unit_elements, cost);
    if threads == 1 {
        return f(0..units);
    }
    let per = units.div_ceil(threads);
    let pieces: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..units)
            .step_by(per)
            .map(|start| {
                let f = &f;
                s.spawn(move || f(start..(start + per).min(units)))
            })
            .collect();
        handles
            .into_iter()
            // A panic in a piece is a bug in a reference kernel: let it
            // end the process like any other worker panic.
            .map(|h| h.join().expect("a CPU reference worker panicked"))
            .collect()
    });
    pieces.concat()
}

/// How many pieces [`split`] makes: at most `threads`, at most one per
/// unit, and each piece at least the cost's minimum of elements.
pub(crate) fn pieces(threads: usize, units: usize, unit_elements: usize, cost: Cost) -> usize {
    let elements = units.saturating_mul(unit_elements);
    threads
        .min(units)
        .min(elements / cost.split_min_elements())
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_every_unit_once_in_order() {
        for units in [0usize, 1, 2, 3, 7, 100, 8193, 70_001] {
            for threads in [1usize, 2, 3, 16] {
                let out = split(threads, units, 1, Cost::Math, |r| {
                    r.map(|u| u as f32).collect()
                });
                let want: Vec<f32> = (0..units).map(|u| u as f32).collect();
                assert_eq!(out, want, "units={units} threads={threads}");
            }
        }
    }

    #[test]
    fn small_work_stays_on_one_thread() {
        let caller = std::thread::current().id();
        split(8, 100, 1, Cost::Cheap, |r| {
            assert_eq!(std::thread::current().id(), caller);
            vec![0.0; r.len()]
        });
    }
}

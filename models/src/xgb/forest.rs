//! Flattened tree storage and traversal.
//!
//! Each tree is stored in one of two layouts, chosen at load time:
//!
//! - **Complete** (depth ≤ [`COMPLETE_MAX_DEPTH`]): the tree is padded to a complete binary
//!   tree of its depth `d` and stored in heap order — `2^d - 1` splits followed by `2^d`
//!   leaves, the children of split `i` at `2i + 1` and `2i + 2`. A leaf above the bottom level
//!   is copied into every bottom slot below it, and the padding splits above those copies
//!   test feature 0 against 0: whichever way they go, they reach the same leaf value, so
//!   the result is unchanged. Traversal is exactly `d` steps with no leaf test and no child
//!   pointers: one 8-byte split per level.
//! - **Linked** (deeper trees, where padding would cost up to `2^d` slots): a compact node
//!   array with explicit children, walked until a leaf.
//!
//! Trees are kept sorted by output group (stable, so the order within a group is XGBoost's
//! tree order): a group's margin is its base score plus its trees' leaf values, added one
//! tree at a time in `f32` in that order — XGBoost's own summation.

/// Deepest tree stored in the complete layout (`2^8` leaves, 3 KiB per tree at most).
pub(crate) const COMPLETE_MAX_DEPTH: u32 = 8;

/// Bit of [`Split::feat`] that marks "missing values go left".
pub(crate) const DEFAULT_LEFT: u32 = 1 << 31;
/// [`Linked::feat`] of a leaf.
const LEAF: u32 = u32::MAX;

/// One split of a complete-layout tree: `x < cond` goes left, missing goes the default way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Split {
    pub(crate) cond: f32,
    /// Feature index, with [`DEFAULT_LEFT`] or'ed in.
    pub(crate) feat: u32,
}

/// One node of a linked-layout tree. A leaf has `feat == LEAF` and its value in `cond`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Linked {
    cond: f32,
    feat: u32,
    left: u32,
    right: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    /// Complete tree of this depth: splits at `splits[off..off + 2^d - 1]`, leaves at
    /// `leaves[leaf_off..leaf_off + 2^d]`.
    Complete { depth: u32, off: u32, leaf_off: u32 },
    /// Linked nodes at `linked[off..]`, root first.
    Linked { off: u32 },
}

/// A tree as the loader hands it over: XGBoost's arrays, already validated (children in
/// range, acyclic, every reachable node visited once, finite values, features in range).
#[derive(Debug)]
pub(crate) struct RawTree {
    pub(crate) left: Vec<i32>,
    pub(crate) right: Vec<i32>,
    pub(crate) feat: Vec<u32>,
    pub(crate) cond: Vec<f32>,
    pub(crate) default_left: Vec<bool>,
    /// Depth of the deepest reachable leaf (0 for a lone leaf).
    pub(crate) depth: u32,
}

impl RawTree {
    fn is_leaf(&self, n: usize) -> bool {
        self.left[n] == -1
    }
    fn split(&self, n: usize) -> Split {
        Split {
            cond: self.cond[n],
            feat: self.feat[n]
                | if self.default_left[n] {
                    DEFAULT_LEFT
                } else {
                    0
                },
        }
    }
}

/// All trees of a model, flattened.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Forest {
    splits: Vec<Split>,
    leaves: Vec<f32>,
    linked: Vec<Linked>,
    /// Trees sorted by group (stable).
    trees: Vec<Layout>,
    /// `trees[group_start[g]..group_start[g + 1]]` belong to output group `g`.
    group_start: Vec<usize>,
}

/// Read access to one row's model features, already in `f32`.
pub(crate) trait Features {
    fn get(&self, feature: usize) -> f32;
}

/// Features gathered into a contiguous `f32` slice in model order.
impl Features for [f32] {
    #[inline(always)]
    fn get(&self, feature: usize) -> f32 {
        self[feature]
    }
}

/// Features read in place from a caller's `f64` row through the bind map.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Direct<'a> {
    pub(crate) row: &'a [f64],
    pub(crate) cols: &'a [usize],
}

impl Features for Direct<'_> {
    #[inline(always)]
    fn get(&self, feature: usize) -> f32 {
        self.row[self.cols[feature]] as f32
    }
}

/// XGBoost's decision (`predict_fn.h`): a missing value (NaN) takes the default child;
/// otherwise `x < cond` goes left. Returns 1 for right.
#[inline(always)]
fn go_right(s: Split, x: f32) -> usize {
    if x.is_nan() {
        usize::from(s.feat & DEFAULT_LEFT == 0)
    } else {
        // x is not NaN here, so "not x < cond" is "x >= cond".
        usize::from(x >= s.cond)
    }
}

impl Forest {
    /// Flattens `trees` (in XGBoost's order, `groups[i]` the output group of tree `i`).
    pub(crate) fn build(trees: &[RawTree], groups: &[usize], n_groups: usize) -> Forest {
        Self::build_with(trees, groups, n_groups, COMPLETE_MAX_DEPTH)
    }

    /// As [`Forest::build`], with the depth limit of the complete layout as a parameter, so
    /// that tests can force either layout on any model.
    pub(crate) fn build_with(
        trees: &[RawTree],
        groups: &[usize],
        n_groups: usize,
        complete_max_depth: u32,
    ) -> Forest {
        let mut order: Vec<usize> = (0..trees.len()).collect();
        order.sort_by_key(|&i| groups[i]); // stable: keeps tree order within a group
        let mut group_start = vec![0usize; n_groups + 1];
        for &g in groups {
            group_start[g + 1] += 1;
        }
        for g in 0..n_groups {
            group_start[g + 1] += group_start[g];
        }
        let mut f = Forest {
            splits: Vec::new(),
            leaves: Vec::new(),
            linked: Vec::new(),
            trees: Vec::with_capacity(trees.len()),
            group_start,
        };
        for &i in &order {
            let t = &trees[i];
            let layout = if t.depth <= complete_max_depth {
                f.push_complete(t)
            } else {
                f.push_linked(t)
            };
            f.trees.push(layout);
        }
        f
    }

    fn push_complete(&mut self, t: &RawTree) -> Layout {
        let d = t.depth;
        let n_splits = (1usize << d) - 1;
        let off = self.splits.len();
        let leaf_off = self.leaves.len();
        self.splits
            .resize(off + n_splits, Split { cond: 0.0, feat: 0 });
        self.leaves.resize(leaf_off + (1usize << d), 0.0);
        // (XGBoost node, heap slot, level): the validated tree is acyclic, so this ends.
        let mut stack = vec![(0usize, 0usize, 0u32)];
        while let Some((n, slot, level)) = stack.pop() {
            if t.is_leaf(n) {
                // Fill the bottom slots below `slot` with this leaf's value.
                let span = 1usize << (d - level);
                let first = ((slot + 1) << (d - level)) - 1 - n_splits;
                self.leaves[leaf_off + first..leaf_off + first + span].fill(t.cond[n]);
            } else {
                self.splits[off + slot] = t.split(n);
                stack.push((t.left[n] as usize, 2 * slot + 1, level + 1));
                stack.push((t.right[n] as usize, 2 * slot + 2, level + 1));
            }
        }
        Layout::Complete {
            depth: d,
            off: off as u32,
            leaf_off: leaf_off as u32,
        }
    }

    fn push_linked(&mut self, t: &RawTree) -> Layout {
        let off = self.linked.len();
        // Renumber reachable nodes in depth-first order, root first.
        let mut index = vec![u32::MAX; t.left.len()];
        let mut order = Vec::new();
        let mut stack = vec![0usize];
        while let Some(n) = stack.pop() {
            index[n] = (off + order.len()) as u32;
            order.push(n);
            if !t.is_leaf(n) {
                stack.push(t.right[n] as usize);
                stack.push(t.left[n] as usize);
            }
        }
        for &n in &order {
            self.linked.push(if t.is_leaf(n) {
                Linked {
                    cond: t.cond[n],
                    feat: LEAF,
                    left: 0,
                    right: 0,
                }
            } else {
                let s = t.split(n);
                Linked {
                    cond: s.cond,
                    feat: s.feat,
                    left: index[t.left[n] as usize],
                    right: index[t.right[n] as usize],
                }
            });
        }
        Layout::Linked { off: off as u32 }
    }

    /// Number of output groups (margins per row).
    pub(crate) fn n_groups(&self) -> usize {
        self.group_start.len() - 1
    }

    pub(crate) fn n_trees(&self) -> usize {
        self.trees.len()
    }

    /// The trees of output group `g`.
    #[inline]
    fn group(&self, g: usize) -> &[Layout] {
        &self.trees[self.group_start[g]..self.group_start[g + 1]]
    }

    #[inline(always)]
    fn leaf<F: Features + ?Sized>(&self, t: Layout, x: &F) -> f32 {
        match t {
            Layout::Complete {
                depth,
                off,
                leaf_off,
            } => {
                let n_splits = (1usize << depth) - 1;
                let splits = &self.splits[off as usize..off as usize + n_splits];
                let mut i = 0usize;
                for _ in 0..depth {
                    let s = splits[i];
                    i = 2 * i + 1 + go_right(s, x.get((s.feat & !DEFAULT_LEFT) as usize));
                }
                self.leaves[leaf_off as usize + i - n_splits]
            }
            Layout::Linked { off } => {
                let mut n = self.linked[off as usize];
                while n.feat != LEAF {
                    let s = Split {
                        cond: n.cond,
                        feat: n.feat,
                    };
                    let r = go_right(s, x.get((n.feat & !DEFAULT_LEFT) as usize));
                    n = self.linked[if r == 0 { n.left } else { n.right } as usize];
                }
                n.cond
            }
        }
    }

    /// The margin of group `g` for one row: `base` plus each tree's leaf, in order, in `f32`.
    #[inline]
    pub(crate) fn margin<F: Features + ?Sized>(&self, g: usize, base: f32, x: &F) -> f32 {
        let trees = self.group(g);
        let mut acc = base;
        // Four traversals are started before their sums are taken, so that independent
        // trees overlap in the pipeline; the additions stay in tree order.
        let mut quads = trees.chunks_exact(4);
        for q in &mut quads {
            let a = self.leaf(q[0], x);
            let b = self.leaf(q[1], x);
            let c = self.leaf(q[2], x);
            let d = self.leaf(q[3], x);
            acc += a;
            acc += b;
            acc += c;
            acc += d;
        }
        for &t in quads.remainder() {
            acc += self.leaf(t, x);
        }
        acc
    }

    /// Adds group `g`'s trees to `acc[r]` for each of `rows.len() / n_feat` gathered rows,
    /// tree by tree (every row's sum stays in tree order), so a tree's nodes are fetched
    /// once per block of rows.
    #[inline]
    pub(crate) fn margin_block(&self, g: usize, rows: &[f32], n_feat: usize, acc: &mut [f32]) {
        for &t in self.group(g) {
            for (a, x) in acc.iter_mut().zip(rows.chunks_exact(n_feat)) {
                *a += self.leaf(t, x);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lopsided tree: root splits on f0 < 0; left is a leaf, right splits on f1 < 1
    /// (missing goes left) into two leaves.
    fn lopsided() -> RawTree {
        RawTree {
            left: vec![1, -1, 3, -1, -1],
            right: vec![2, -1, 4, -1, -1],
            feat: vec![0, 0, 1, 0, 0],
            cond: vec![0.0, 10.0, 1.0, 20.0, 30.0],
            default_left: vec![false, false, true, false, false],
            depth: 2,
        }
    }

    #[test]
    fn both_layouts_agree_with_the_definition() {
        let trees = [lopsided()];
        for max in [0, 8] {
            let f = Forest::build_with(&trees, &[0], 1, max);
            let cases: [([f32; 2], f32); 7] = [
                ([-1.0, 5.0], 10.0),
                ([0.0, 0.0], 20.0), // 0.0 is not missing, and 0 < 0 is false
                ([0.0, 1.0], 30.0), // at the threshold: right
                ([0.0, 0.999_999_94], 20.0),
                ([0.0, f32::NAN], 20.0), // default left
                ([f32::NAN, 0.0], 20.0), // default right at the root
                ([f32::NAN, f32::NAN], 20.0),
            ];
            for (x, want) in cases {
                assert_eq!(f.margin(0, 0.0, &x[..]), want, "max={max} x={x:?}");
            }
        }
    }

    #[test]
    fn groups_keep_tree_order() {
        let leaf = |v: f32| RawTree {
            left: vec![-1],
            right: vec![-1],
            feat: vec![0],
            cond: vec![v],
            default_left: vec![false],
            depth: 0,
        };
        // f32 addition is not associative: 0.5 + 1 + 1e8 - 1e8 is 0 in this order only.
        let trees = [leaf(1.0), leaf(5.0), leaf(1e8), leaf(7.0), leaf(-1e8)];
        let groups = [0, 1, 0, 1, 0];
        let f = Forest::build(&trees, &groups, 2);
        assert_eq!(f.margin(0, 0.5, &[0.0f32][..]), 0.0);
        assert_eq!(f.margin(1, 0.0, &[0.0f32][..]), 12.0);
    }
}

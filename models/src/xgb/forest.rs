//! Flattened tree storage and traversal.
//!
//! # Missing values without a branch
//!
//! XGBoost sends a missing value (NaN) to a split's default child and otherwise goes left iff
//! `x < cond`. With `cond` finite (checked at load), a NaN behaves exactly like −∞ at a
//! split whose default is left, and like +∞ at one whose default is right. So each feature
//! is gathered into two *slots*, `2f` (NaN replaced by −∞) and `2f + 1` (NaN replaced by +∞),
//! each split reads the slot of its default direction, and the decision is one comparison:
//! right iff `slot_value >= cond` (for non-NaN values, `!(x < cond)` is `x >= cond`). Real
//! ±∞ inputs compare as themselves, as in XGBoost.
//!
//! # Layouts
//!
//! A model's trees are stored in one of two layouts, chosen at load time:
//!
//! - **Complete** (every tree of depth ≤ [`COMPLETE_MAX_DEPTH`], at most 128 features):
//!   each tree is padded to a complete binary tree of the model's largest depth `d` and
//!   stored in heap order in blocks of `N = 2^d` entries — thresholds (`f32`), slots (`u8`;
//!   the last entry unused) and leaves (`f32`), struct-of-arrays so that a 100-tree depth-6
//!   model's splits take 32 KiB. The children of split `i` are at `2i + 1` and `2i + 2`; leaf
//!   `j` is reached at heap index `N - 1 + j`. A leaf above the bottom level is copied into
//!   every bottom slot below it, and the padding splits above those copies test slot 0
//!   against 0: whichever way they go they reach the same leaf value, so the result is
//!   unchanged. A walk is exactly `d` branch-free steps with no leaf test and no child
//!   pointers; `N` is a compile-time constant of the walk (one instantiation per depth), so
//!   indices are masked instead of bounds-checked. A walk is a chain of dependent loads, so
//!   many run interleaved: [`ROW_LANES`] trees of one row, or one tree for [`BLOCK_LANES`]
//!   rows (measured on the benchmark model: fewer lanes leave the core waiting on loads,
//!   more spill registers).
//! - **Linked** (some tree deeper, where padding would cost `2^d` slots per tree, or more
//!   than 128 features): a compact node array with explicit children, walked until a leaf.
//!
//! Trees are kept sorted by output group (stable, so the order within a group is XGBoost's
//! tree order): a group's margin is its base score plus its trees' leaf values, added one
//! tree at a time in `f32` in that order — XGBoost's own summation.

/// Deepest tree stored in the complete layout (256 entries per tree, 2.25 KiB).
pub(crate) const COMPLETE_MAX_DEPTH: u32 = 8;

/// Slots in a gathered row buffer: two per feature, so rows of up to 128 features. The
/// complete layout stores slots as `u8` (so a slot read needs no bounds check), and is used
/// for models of at most this many slots.
pub(crate) const ROW_SLOTS: usize = 256;

/// Trees of one row walked in lockstep by [`Forest::margin`].
const ROW_LANES: usize = 16;

/// Rows of a block walked in lockstep through one tree by [`Forest::margin_block`].
const BLOCK_LANES: usize = 16;

/// [`Linked::slot`] of a leaf.
const LEAF: u32 = u32::MAX;

/// One tree of the complete layout: split `i` goes right iff `slot value >= cond[i]`, reading
/// slot `slot[i]` (`2 * feature + 1` if missing values go right, `2 * feature` if left).
/// Struct-of-arrays, 5 bytes per split, so the splits of a 100-tree depth-6 model fill 32 KiB.
#[derive(Debug, Clone, Copy)]
struct Tree<'a, const N: usize> {
    cond: &'a [f32; N],
    slot: &'a [u8; N],
    leaf: &'a [f32; N],
}

/// One node of a linked-layout tree. A leaf has `slot == LEAF` and its value in `cond`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Linked {
    cond: f32,
    slot: u32,
    left: u32,
    right: u32,
}

#[derive(Debug, Clone, PartialEq)]
enum Layout {
    /// Every tree padded to a complete tree of this depth: tree `t`'s splits at
    /// `splits[t * 2^d..]`, its leaves at `leaves[t * 2^d..]`.
    Complete { depth: u32 },
    /// Linked nodes; tree `t`'s root at `linked[roots[t]]`.
    Linked { roots: Vec<u32> },
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
    /// The slot a split reads (see the module docs).
    fn slot(&self, n: usize) -> u32 {
        2 * self.feat[n] + u32::from(!self.default_left[n])
    }
}

/// All trees of a model, flattened.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Forest {
    layout: Layout,
    conds: Vec<f32>,
    slots: Vec<u8>,
    leaves: Vec<f32>,
    linked: Vec<Linked>,
    n_trees: usize,
    /// Trees `group_start[g]..group_start[g + 1]` (after sorting) belong to output group `g`.
    group_start: Vec<usize>,
}

/// The two slot values of one input cell (see the module docs).
#[inline(always)]
pub(crate) fn slots(v: f64) -> [f32; 2] {
    let x = v as f32;
    if x.is_nan() {
        [f32::NEG_INFINITY, f32::INFINITY]
    } else {
        [x, x]
    }
}

/// Read access to one row's slots.
pub(crate) trait Features {
    fn slot(&self, slot: usize) -> f32;
}

/// A gathered row: slot `s` at index `s`.
impl Features for [f32; ROW_SLOTS] {
    #[inline(always)]
    fn slot(&self, slot: usize) -> f32 {
        // Slots are below ROW_SLOTS by construction (a `u8` in the complete layout, so the
        // mask costs nothing there); it only spares a bounds check.
        self[slot & (ROW_SLOTS - 1)]
    }
}

/// Slots computed in place from a caller's `f64` row through the bind map (rows too wide to
/// gather on the stack).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Direct<'a> {
    pub(crate) row: &'a [f64],
    pub(crate) cols: &'a [usize],
}

impl Features for Direct<'_> {
    #[inline(always)]
    fn slot(&self, slot: usize) -> f32 {
        slots(self.row[self.cols[slot >> 1]])[slot & 1]
    }
}

/// One step down a complete tree from position `j` of level `level` (heap index
/// `2^level - 1 + j`) to a position on the next level. Positions rather than heap indices
/// keep the per-level offset a constant of the unrolled walk and make the final position the
/// leaf index.
#[inline(always)]
fn step<const N: usize, F: Features + ?Sized>(
    t: Tree<'_, N>,
    level: u32,
    j: usize,
    x: &F,
) -> usize {
    let i = ((1usize << level) - 1 + j) & (N - 1);
    2 * j + usize::from(x.slot(usize::from(t.slot[i])) >= t.cond[i])
}

/// Walks a complete tree of `N` leaves for one row; returns the leaf value.
#[inline(always)]
fn walk<const N: usize, F: Features + ?Sized>(t: Tree<'_, N>, x: &F) -> f32 {
    let mut j = 0usize;
    for level in 0..N.trailing_zeros() {
        j = step(t, level, j, x);
    }
    t.leaf[j & (N - 1)]
}

/// Adds the leaves of the complete trees `(cs[t], ss[t], ls[t])` for one row to `acc`, in
/// order, walking `L` trees in lockstep (`cs.len()` is a multiple of `L`).
#[inline(always)]
fn lockstep<const N: usize, const L: usize>(
    cs: &[[f32; N]],
    ss: &[[u8; N]],
    ls: &[[f32; N]],
    x: &(impl Features + ?Sized),
    mut acc: f32,
) -> f32 {
    let d = N.trailing_zeros();
    for ((c, s), l) in cs
        .chunks_exact(L)
        .zip(ss.chunks_exact(L))
        .zip(ls.chunks_exact(L))
    {
        let mut j = [0usize; L];
        for level in 0..d {
            for k in 0..L {
                let t = Tree {
                    cond: &c[k],
                    slot: &s[k],
                    leaf: &l[k],
                };
                j[k] = step(t, level, j[k], x);
            }
        }
        for k in 0..L {
            acc += l[k][j[k] & (N - 1)];
        }
    }
    acc
}

/// Calls `$f::<N>` with `N = 2^depth`, for the depths of the complete layout.
macro_rules! by_depth {
    ($depth:expr, $self:ident . $f:ident ( $($arg:expr),* )) => {
        match $depth {
            0 => $self.$f::<1, _>($($arg),*),
            1 => $self.$f::<2, _>($($arg),*),
            2 => $self.$f::<4, _>($($arg),*),
            3 => $self.$f::<8, _>($($arg),*),
            4 => $self.$f::<16, _>($($arg),*),
            5 => $self.$f::<32, _>($($arg),*),
            6 => $self.$f::<64, _>($($arg),*),
            7 => $self.$f::<128, _>($($arg),*),
            _ => $self.$f::<256, _>($($arg),*),
        }
    };
}

impl Forest {
    /// Flattens `trees` (in XGBoost's order, `groups[i]` the output group of tree `i`), in the
    /// complete layout if every tree is at most `complete_max_depth` deep (capped at
    /// [`COMPLETE_MAX_DEPTH`]) and the model has at most 128 features, else linked.
    pub(crate) fn build_with(
        trees: &[RawTree],
        groups: &[usize],
        n_groups: usize,
        n_features: usize,
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
        let depth = trees.iter().map(|t| t.depth).max().unwrap_or(0);
        let mut f = Forest {
            layout: Layout::Complete { depth },
            conds: Vec::new(),
            slots: Vec::new(),
            leaves: Vec::new(),
            linked: Vec::new(),
            n_trees: trees.len(),
            group_start,
        };
        if depth <= complete_max_depth.min(COMPLETE_MAX_DEPTH) && 2 * n_features <= ROW_SLOTS {
            for &i in &order {
                f.push_complete(&trees[i], depth);
            }
        } else {
            let mut roots = Vec::with_capacity(trees.len());
            for &i in &order {
                roots.push(f.linked.len() as u32);
                f.push_linked(&trees[i]);
            }
            f.layout = Layout::Linked { roots };
        }
        f
    }

    fn push_complete(&mut self, t: &RawTree, d: u32) {
        let n = 1usize << d;
        let off = self.conds.len();
        let leaf_off = self.leaves.len();
        self.conds.resize(off + n, 0.0);
        self.slots.resize(off + n, 0);
        self.leaves.resize(leaf_off + n, 0.0);
        // (XGBoost node, heap slot, level): the validated tree is acyclic, so this ends.
        let mut stack = vec![(0usize, 0usize, 0u32)];
        while let Some((node, slot, level)) = stack.pop() {
            if t.is_leaf(node) {
                // Fill the bottom slots below `slot` with this leaf's value.
                let span = 1usize << (d - level);
                let first = ((slot + 1) << (d - level)) - n;
                self.leaves[leaf_off + first..leaf_off + first + span].fill(t.cond[node]);
            } else {
                self.conds[off + slot] = t.cond[node];
                // The complete layout is only chosen when every slot fits a u8.
                self.slots[off + slot] = t.slot(node) as u8;
                stack.push((t.left[node] as usize, 2 * slot + 1, level + 1));
                stack.push((t.right[node] as usize, 2 * slot + 2, level + 1));
            }
        }
    }

    fn push_linked(&mut self, t: &RawTree) {
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
                    slot: LEAF,
                    left: 0,
                    right: 0,
                }
            } else {
                Linked {
                    cond: t.cond[n],
                    slot: t.slot(n),
                    left: index[t.left[n] as usize],
                    right: index[t.right[n] as usize],
                }
            });
        }
    }

    /// Number of output groups (margins per row).
    pub(crate) fn n_groups(&self) -> usize {
        self.group_start.len() - 1
    }

    pub(crate) fn n_trees(&self) -> usize {
        self.n_trees
    }

    /// `"complete"` or `"linked"`.
    #[cfg(test)]
    pub(crate) fn layout_name(&self) -> &'static str {
        match self.layout {
            Layout::Complete { .. } => "complete",
            Layout::Linked { .. } => "linked",
        }
    }

    /// Tree `t` of the complete layout with `N` slots per tree.
    #[inline(always)]
    fn tree<const N: usize>(&self, t: usize) -> Tree<'_, N> {
        let (c, _) = self.conds.as_chunks::<N>();
        let (s, _) = self.slots.as_chunks::<N>();
        let (l, _) = self.leaves.as_chunks::<N>();
        Tree {
            cond: &c[t],
            slot: &s[t],
            leaf: &l[t],
        }
    }

    /// Leaf value of linked tree `t` for one row.
    #[inline(always)]
    fn linked_leaf<F: Features + ?Sized>(&self, root: u32, x: &F) -> f32 {
        let mut n = self.linked[root as usize];
        while n.slot != LEAF {
            let next = if x.slot(n.slot as usize) >= n.cond {
                n.right
            } else {
                n.left
            };
            n = self.linked[next as usize];
        }
        n.cond
    }

    /// The margin of group `g` for one row: `base` plus each tree's leaf, in order, in `f32`.
    #[inline]
    pub(crate) fn margin<F: Features + ?Sized>(&self, g: usize, base: f32, x: &F) -> f32 {
        match &self.layout {
            Layout::Complete { depth } => by_depth!(*depth, self.margin_complete(g, base, x)),
            Layout::Linked { roots } => {
                let (a, b) = (self.group_start[g], self.group_start[g + 1]);
                let mut acc = base;
                for &r in &roots[a..b] {
                    acc += self.linked_leaf(r, x);
                }
                acc
            }
        }
    }

    #[inline(always)]
    fn margin_complete<const N: usize, F: Features + ?Sized>(
        &self,
        g: usize,
        base: f32,
        x: &F,
    ) -> f32 {
        let (a, b) = (self.group_start[g], self.group_start[g + 1]);
        let cs = &self.conds.as_chunks::<N>().0[a..b];
        let ss = &self.slots.as_chunks::<N>().0[a..b];
        let ls = &self.leaves.as_chunks::<N>().0[a..b];
        let mut acc = base;
        let (n_wide, rest) = (cs.len() / ROW_LANES * ROW_LANES, cs.len() % ROW_LANES);
        let n_quads = n_wide + rest / 4 * 4;
        // ROW_LANES trees walked in lockstep (independent chains of loads for the pipeline to
        // overlap), then four at a time, then one. The additions stay in tree order.
        acc = lockstep::<N, ROW_LANES>(&cs[..n_wide], &ss[..n_wide], &ls[..n_wide], x, acc);
        acc = lockstep::<N, 4>(
            &cs[n_wide..n_quads],
            &ss[n_wide..n_quads],
            &ls[n_wide..n_quads],
            x,
            acc,
        );
        lockstep::<N, 1>(&cs[n_quads..], &ss[n_quads..], &ls[n_quads..], x, acc)
    }

    /// Adds group `g`'s trees to `acc[r]` for each gathered row `rows[r]`, tree by tree
    /// (every row's sum stays in tree order), so a tree's nodes are fetched once per block.
    #[inline]
    pub(crate) fn margin_block(&self, g: usize, rows: &[[f32; ROW_SLOTS]], acc: &mut [f32]) {
        match &self.layout {
            Layout::Complete { depth } => by_depth!(*depth, self.block_complete(g, rows, acc)),
            Layout::Linked { roots } => {
                let (a, b) = (self.group_start[g], self.group_start[g + 1]);
                for &root in &roots[a..b] {
                    for (a, x) in acc.iter_mut().zip(rows) {
                        *a += self.linked_leaf(root, x);
                    }
                }
            }
        }
    }

    #[inline(always)]
    fn block_complete<const N: usize, const M: usize>(
        &self,
        g: usize,
        rows: &[[f32; M]],
        acc: &mut [f32],
    ) where
        [f32; M]: Features,
    {
        let d = N.trailing_zeros();
        let (a, b) = (self.group_start[g], self.group_start[g + 1]);
        for t in a..b {
            let tree = self.tree::<N>(t);
            let mut lanes = acc.chunks_exact_mut(BLOCK_LANES);
            let mut xs = rows.chunks_exact(BLOCK_LANES);
            // BLOCK_LANES rows walked in lockstep through the same tree.
            for (q, x) in (&mut lanes).zip(&mut xs) {
                let mut j = [0usize; BLOCK_LANES];
                for level in 0..d {
                    for k in 0..BLOCK_LANES {
                        j[k] = step(tree, level, j[k], &x[k]);
                    }
                }
                for k in 0..BLOCK_LANES {
                    q[k] += tree.leaf[j[k] & (N - 1)];
                }
            }
            for (a, x) in lanes.into_remainder().iter_mut().zip(xs.remainder()) {
                *a += walk(tree, x);
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

    fn row(x: [f64; 2]) -> [f32; ROW_SLOTS] {
        let mut b = [0f32; ROW_SLOTS];
        for (f, &v) in x.iter().enumerate() {
            let [lo, hi] = slots(v);
            b[2 * f] = lo;
            b[2 * f + 1] = hi;
        }
        b
    }

    #[test]
    fn both_layouts_agree_with_the_definition() {
        let trees = [lopsided()];
        for max in [0, 8] {
            let f = Forest::build_with(&trees, &[0], 1, 2, max);
            let cases: [([f64; 2], f32); 9] = [
                ([-1.0, 5.0], 10.0),
                ([0.0, 0.0], 20.0), // 0.0 is not missing, and 0 < 0 is false
                ([-0.0, 0.0], 20.0),
                ([0.0, 1.0], 30.0), // at the threshold: right
                ([0.0, 0.999_999_94], 20.0),
                ([0.0, f64::NAN], 20.0), // default left
                ([f64::NAN, 0.0], 20.0), // default right at the root
                ([f64::NAN, f64::NAN], 20.0),
                ([f64::NEG_INFINITY, f64::INFINITY], 10.0),
            ];
            for (x, want) in cases {
                assert_eq!(f.margin(0, 0.0, &row(x)), want, "max={max} x={x:?}");
                let d = Direct {
                    row: &x,
                    cols: &[0, 1],
                };
                assert_eq!(f.margin(0, 0.0, &d), want, "direct max={max} x={x:?}");
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
        for max in [0, 8] {
            let f = Forest::build_with(&trees, &groups, 2, 1, max);
            assert_eq!(f.margin(0, 0.5, &row([0.0, 0.0])), 0.0);
            assert_eq!(f.margin(1, 0.0, &row([0.0, 0.0])), 12.0);
        }
    }
}

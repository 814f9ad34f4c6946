//! The fit: scaler, k-means++ starts, coordinate descent (exact DP E-step, mean M-step), best of
//! the starts, state ordering.
//!
//! Every floating-point operation that decides a label is done in the order the reference does
//! it (sequential sums over features for the distances, sequential sums over rows for the
//! scaler and the means, `loss + min(V_{t−1}(k), min V_{t−1} + λ)` in the recursion, first index
//! on ties), so that the labels are the reference's exactly and the centres agree to rounding.

use super::rng::Xoshiro256;
use super::{
    MAX_STATES, SjmError, SjmFitConfig, SjmFitInfo, SjmFitReport, SjmInitReport, SjmModel,
    SjmParts, SjmStop, check_names,
};

/// Rows per block of the loss computation (the block's losses stay in L1).
const BLOCK: usize = 256;

/// Column-major z-scores (`F × n`) of `n` row-major rows: `(x − mean) / std`, the division of
/// scikit-learn's `StandardScaler.transform`.
pub(crate) fn scale_columns(
    rows: &[f64],
    n: usize,
    f: usize,
    mean: &[f64],
    std: &[f64],
) -> Vec<f64> {
    let mut z = vec![0.0; n * f];
    for (t, row) in rows.chunks_exact(f).enumerate() {
        for (j, &x) in row.iter().enumerate() {
            z[j * n + t] = (x - mean[j]) / std[j];
        }
    }
    z
}

/// The exact E-step: losses `½‖z_t − μ_k‖²` (infinite for absent states), the forward
/// recursion into `values` (`n × K`), then the traceback into `labels`. Returns the optimal
/// objective.
#[allow(clippy::too_many_arguments)]
pub(crate) fn e_step(
    z: &[f64],
    n: usize,
    f: usize,
    k: usize,
    centres: &[f64],
    present: &[bool],
    lambda: f64,
    values: &mut [f64],
    labels: &mut [u8],
) -> f64 {
    debug_assert!(n > 0 && z.len() == n * f && values.len() == n * k && labels.len() == n);
    let mut loss = [[0.0f64; BLOCK]; MAX_STATES];
    let mut m_prev = 0.0f64;
    let mut t0 = 0;
    while t0 < n {
        let len = BLOCK.min(n - t0);
        for (s, acc) in loss.iter_mut().enumerate().take(k) {
            let acc = &mut acc[..len];
            if !present[s] {
                acc.fill(f64::INFINITY);
                continue;
            }
            acc.fill(0.0);
            let centre = &centres[s * f..(s + 1) * f];
            for (j, &c) in centre.iter().enumerate() {
                let col = &z[j * n + t0..j * n + t0 + len];
                for (a, &x) in acc.iter_mut().zip(col) {
                    let d = x - c;
                    *a += d * d;
                }
            }
            for a in acc.iter_mut() {
                *a *= 0.5;
            }
        }
        // `b` indexes the inner dimension of the per-state loss rows (kept state-major so
        // that the loss loop above vectorises over rows).
        #[allow(clippy::needless_range_loop)]
        for b in 0..len {
            let t = t0 + b;
            let (before, rest) = values.split_at_mut(t * k);
            let row = &mut rest[..k];
            if t == 0 {
                for (s, v) in row.iter_mut().enumerate() {
                    *v = loss[s][b];
                }
            } else {
                // min_j (V[j] + λ·[j ≠ s]) == min(V[s], min_j V[j] + λ): the rounding of `+ λ`
                // is monotone, so this is bit-identical to the reference's K × K minimum.
                let prev = &before[(t - 1) * k..];
                let thr = m_prev + lambda;
                for (s, v) in row.iter_mut().enumerate() {
                    *v = loss[s][b] + fmin(prev[s], thr);
                }
            }
            m_prev = row.iter().copied().fold(f64::INFINITY, fmin);
        }
        t0 += len;
    }
    // Traceback, first index on ties (numpy's argmin).
    let last = &values[(n - 1) * k..];
    let mut s = argmin(last);
    let objective = last[s];
    labels[n - 1] = s as u8;
    for t in (1..n).rev() {
        let prev = &values[(t - 1) * k..t * k];
        let mut best = 0;
        let mut best_w = prev[0] + if s == 0 { 0.0 } else { lambda };
        for (j, &v) in prev.iter().enumerate().skip(1) {
            let w = v + if j == s { 0.0 } else { lambda };
            if w < best_w {
                best_w = w;
                best = j;
            }
        }
        s = best;
        labels[t - 1] = s as u8;
    }
    objective
}

/// The smaller of two numbers that are never NaN (values are finite or +∞): a plain compare,
/// without `f64::min`'s NaN handling.
#[inline(always)]
pub(crate) fn fmin(a: f64, b: f64) -> f64 {
    if b < a { b } else { a }
}

/// First index of the minimum.
#[inline]
pub(crate) fn argmin(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate().skip(1) {
        if x < v[best] {
            best = i;
        }
    }
    best
}

/// Mean M-step: the centre of each state is the mean of its rows (summed in row order, then
/// divided by the count); a state without rows becomes absent.
fn m_step(
    z: &[f64],
    n: usize,
    f: usize,
    k: usize,
    labels: &[u8],
    centres: &mut [f64],
    present: &mut [bool],
) {
    let mut counts = [0usize; MAX_STATES];
    for &l in labels {
        counts[l as usize] += 1;
    }
    match k {
        2 => column_sums::<2>(z, n, f, labels, centres),
        3 => column_sums::<3>(z, n, f, labels, centres),
        4 => column_sums::<4>(z, n, f, labels, centres),
        5 => column_sums::<5>(z, n, f, labels, centres),
        6 => column_sums::<6>(z, n, f, labels, centres),
        7 => column_sums::<7>(z, n, f, labels, centres),
        _ => column_sums::<8>(z, n, f, labels, centres),
    }
    for s in 0..k {
        present[s] = counts[s] > 0;
        for c in &mut centres[s * f..(s + 1) * f] {
            *c /= counts[s] as f64;
        }
    }
}

/// Per state and feature, the sum of the feature over the state's rows, in row order (the
/// reference's `weightsᵀ · X` with 0/1 weights: adding the zero of a row of another state
/// changes no sum). One register accumulator per state instead of a scattered
/// read-modify-write, whose store-to-load chains would dominate the fit.
fn column_sums<const K: usize>(z: &[f64], n: usize, f: usize, labels: &[u8], centres: &mut [f64]) {
    for j in 0..f {
        let col = &z[j * n..(j + 1) * n];
        let mut acc = [0.0f64; K];
        for (&x, &l) in col.iter().zip(labels) {
            for (s, a) in acc.iter_mut().enumerate() {
                *a += if usize::from(l) == s { x } else { 0.0 };
            }
        }
        for (s, &a) in acc.iter().enumerate() {
            centres[s * f + j] = a;
        }
    }
}

/// Whether two labelings are the same partition (a bijective relabelling of each other).
fn same_clustering(a: &[u8], b: &[u8]) -> bool {
    let mut ab = [u8::MAX; 256];
    let mut ba = [u8::MAX; 256];
    for (&x, &y) in a.iter().zip(b) {
        let (xi, yi) = (x as usize, y as usize);
        if ab[xi] == u8::MAX {
            ab[xi] = y;
        } else if ab[xi] != y {
            return false;
        }
        if ba[yi] == u8::MAX {
            ba[yi] = x;
        } else if ba[yi] != x {
            return false;
        }
    }
    true
}

/// Greedy k-means++ (scikit-learn's `_kmeans_plusplus` with unit weights): the first centre
/// uniformly, each next one the best of `2 + ⌊ln K⌋` candidates drawn with probability
/// proportional to the squared distance to the nearest centre chosen so far.
fn kmeans_plusplus(z: &[f64], n: usize, f: usize, k: usize, rng: &mut Xoshiro256) -> Vec<f64> {
    let trials = 2 + (k as f64).ln() as usize;
    let mut centres = vec![0.0; k * f];
    let dist_to = |i: usize, out: &mut [f64]| {
        out.fill(0.0);
        for j in 0..f {
            let col = &z[j * n..(j + 1) * n];
            let c = col[i];
            for (o, &x) in out.iter_mut().zip(col) {
                let d = x - c;
                *o += d * d;
            }
        }
    };
    let copy_centre = |centres: &mut [f64], s: usize, i: usize| {
        for j in 0..f {
            centres[s * f + j] = z[j * n + i];
        }
    };
    let first = rng.below(n);
    copy_centre(&mut centres, 0, first);
    let mut closest = vec![0.0; n];
    dist_to(first, &mut closest);
    let mut pot: f64 = closest.iter().sum();
    let mut cumsum = vec![0.0; n];
    let mut cand = vec![0.0; n];
    let mut best_d = vec![0.0; n];
    for s in 1..k {
        let mut acc = 0.0;
        for (c, &d) in cumsum.iter_mut().zip(&closest) {
            acc += d;
            *c = acc;
        }
        let mut best_pot = f64::INFINITY;
        let mut best_id = 0;
        for _ in 0..trials {
            let r = rng.next_f64() * pot;
            // numpy's searchsorted(side="left"): the first index whose cumulative sum is >= r.
            let id = cumsum.partition_point(|&c| c < r).min(n - 1);
            dist_to(id, &mut cand);
            let mut p = 0.0;
            for (c, &d) in cand.iter_mut().zip(&closest) {
                *c = fmin(*c, d);
                p += *c;
            }
            if p < best_pot {
                best_pot = p;
                best_id = id;
                std::mem::swap(&mut best_d, &mut cand);
            }
        }
        pot = best_pot;
        std::mem::swap(&mut closest, &mut best_d);
        copy_centre(&mut centres, s, best_id);
    }
    centres
}

struct Solution {
    centres: Vec<f64>,
    present: Vec<bool>,
    labels: Vec<u8>,
    objective: f64,
}

/// Coordinate descent from one start, with the reference's loop condition.
fn descend(
    z: &[f64],
    n: usize,
    f: usize,
    cfg: &SjmFitConfig,
    start: &[f64],
    values: &mut [f64],
) -> (Solution, SjmInitReport) {
    let k = cfg.n_states;
    let mut centres = start.to_vec();
    let mut present = vec![true; k];
    let mut labels = vec![0u8; n];
    let mut labels_pre = vec![0u8; n];
    let mut has_pre = false;
    let mut val = e_step(
        z,
        n,
        f,
        k,
        &centres,
        &present,
        cfg.jump_penalty,
        values,
        &mut labels,
    );
    let mut val_pre = f64::INFINITY;
    let mut iterations = 0;
    let stop = loop {
        if iterations >= cfg.max_iter {
            break SjmStop::MaxIter;
        }
        if has_pre && same_clustering(&labels, &labels_pre) {
            break SjmStop::SameLabels;
        }
        let improved = val_pre - val > cfg.tol;
        if !improved {
            break SjmStop::Tolerance;
        }
        iterations += 1;
        std::mem::swap(&mut labels, &mut labels_pre);
        has_pre = true;
        val_pre = val;
        m_step(z, n, f, k, &labels_pre, &mut centres, &mut present);
        val = e_step(
            z,
            n,
            f,
            k,
            &centres,
            &present,
            cfg.jump_penalty,
            values,
            &mut labels,
        );
    };
    (
        Solution {
            centres,
            present,
            labels,
            objective: val,
        },
        SjmInitReport {
            objective: val,
            iterations,
            stop,
        },
    )
}

/// Scaler (scikit-learn's `StandardScaler`: sequential sums, population variance with its
/// correction term) over the finite rows, which are copied into `kept`.
fn scaler(
    kept: &[f64],
    n: usize,
    f: usize,
    names: &[String],
) -> Result<(Vec<f64>, Vec<f64>), SjmError> {
    let mut mean = vec![0.0; f];
    let mut std = vec![0.0; f];
    let nf = n as f64;
    for j in 0..f {
        let col = kept.iter().skip(j).step_by(f);
        let mut s = 0.0;
        for &x in col.clone() {
            s += x;
        }
        let m = s / nf;
        let (mut corr, mut sq) = (0.0, 0.0);
        for &x in col {
            let d = x - m;
            corr += d;
            sq += d * d;
        }
        let var = (sq - corr * corr / nf) / nf;
        // scikit-learn's `_is_constant_feature`: the variance is within rounding of zero.
        let eps = f64::EPSILON;
        let bound = nf * eps * var + (nf * m * eps) * (nf * m * eps);
        let varies = var > bound;
        if !varies {
            return Err(SjmError::ConstantFeature {
                name: names[j].clone(),
                n_rows: n,
            });
        }
        mean[j] = m;
        std[j] = var.sqrt();
    }
    Ok((mean, std))
}

pub(crate) enum Starts<'a> {
    KMeansPlusPlus,
    Given(&'a [f64]),
}

pub(crate) fn fit(
    rows: &[f64],
    n_features: usize,
    feature_names: &[String],
    cfg: &SjmFitConfig,
    starts: Starts<'_>,
) -> Result<(SjmModel, SjmFitReport), SjmError> {
    cfg.validate()?;
    let f = n_features;
    if feature_names.len() != f {
        return Err(SjmError::Shape {
            what: "feature names".into(),
            expected: f,
            found: feature_names.len(),
        });
    }
    check_names(feature_names)?;
    if !rows.len().is_multiple_of(f) {
        return Err(SjmError::Shape {
            what: "rows (a multiple of the feature count)".into(),
            expected: rows.len() / f * f,
            found: rows.len(),
        });
    }
    let k = cfg.n_states;
    if let Starts::Given(s) = starts {
        if s.is_empty() || !s.len().is_multiple_of(k * f) {
            return Err(SjmError::Shape {
                what: "starting centres (a positive multiple of K × F)".into(),
                expected: (s.len() / (k * f)).max(1) * k * f,
                found: s.len(),
            });
        }
        if let Some(index) = s.iter().position(|v| !v.is_finite()) {
            return Err(SjmError::NonFinite {
                field: "starting centres".into(),
                index,
            });
        }
    }
    let mut kept = Vec::with_capacity(rows.len());
    let mut n_skipped = 0;
    for row in rows.chunks_exact(f) {
        if row.iter().all(|v| v.is_finite()) {
            kept.extend_from_slice(row);
        } else {
            n_skipped += 1;
        }
    }
    let n = kept.len() / f;
    let needed = k.max(2);
    if n < needed {
        return Err(SjmError::TooFewRows {
            usable: n,
            skipped: n_skipped,
            needed,
        });
    }
    let (mean, std) = scaler(&kept, n, f, feature_names)?;
    let z = scale_columns(&kept, n, f, &mean, &std);
    drop(kept);

    let (start_list, init_name) = match starts {
        Starts::Given(s) => (
            s.chunks_exact(k * f)
                .map(<[f64]>::to_vec)
                .collect::<Vec<_>>(),
            "given",
        ),
        Starts::KMeansPlusPlus => {
            let mut rng = Xoshiro256::new(cfg.seed);
            (
                (0..cfg.n_init)
                    .map(|_| kmeans_plusplus(&z, n, f, k, &mut rng))
                    .collect(),
                "k-means++",
            )
        }
    };

    let mut values = vec![0.0; n * k];
    let mut best: Option<(usize, Solution)> = None;
    let mut inits = Vec::with_capacity(start_list.len());
    for (i, start) in start_list.iter().enumerate() {
        let (sol, report) = descend(&z, n, f, cfg, start, &mut values);
        inits.push(report);
        let better = match &best {
            None => sol.objective < f64::INFINITY,
            Some((_, b)) => !same_clustering(&b.labels, &sol.labels) && sol.objective < b.objective,
        };
        if better {
            best = Some((i, sol));
        }
    }
    let Some((best_init, sol)) = best else {
        // Only reachable when every objective overflowed.
        return Err(SjmError::NonFinite {
            field: "objective".into(),
            index: 0,
        });
    };

    let mut counts = [0usize; MAX_STATES];
    for &l in &sol.labels {
        counts[l as usize] += 1;
    }
    let empty = (0..k)
        .filter(|&s| counts[s] == 0 || !sol.present[s])
        .count();
    if empty > 0 {
        return Err(SjmError::EmptyState { empty, n_states: k });
    }
    // Decreasing frequency, ties in start order (a stable sort).
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| counts[b].cmp(&counts[a]));
    let mut new_of_old = [0u8; MAX_STATES];
    for (new, &old) in order.iter().enumerate() {
        new_of_old[old] = new as u8;
    }
    let labels: Vec<u8> = sol.labels.iter().map(|&l| new_of_old[l as usize]).collect();
    let mut centres = vec![0.0; k * f];
    for (new, &old) in order.iter().enumerate() {
        centres[new * f..(new + 1) * f].copy_from_slice(&sol.centres[old * f..(old + 1) * f]);
    }
    let freqs: Vec<usize> = order.iter().map(|&old| counts[old]).collect();
    let mut var = vec![0.0; k * f];
    for j in 0..f {
        let col = &z[j * n..(j + 1) * n];
        for (&x, &l) in col.iter().zip(&labels) {
            let d = x - centres[l as usize * f + j];
            var[l as usize * f + j] += d * d;
        }
    }
    for s in 0..k {
        for v in &mut var[s * f..(s + 1) * f] {
            *v /= freqs[s] as f64;
        }
    }
    let n_switches = labels.windows(2).filter(|w| w[0] != w[1]).count();
    let best_report = inits[best_init];
    let info = SjmFitInfo {
        objective: sol.objective,
        iterations: best_report.iterations,
        best_init,
        n_init: start_list.len(),
        init: init_name.to_string(),
        seed: cfg.seed,
        max_iter: cfg.max_iter,
        tol: cfg.tol,
        n_rows: n,
        n_skipped,
        state_frequencies: freqs.clone(),
    };
    let model = SjmModel::from_parts_with_info(
        SjmParts {
            feature_names: feature_names.to_vec(),
            jump_penalty: cfg.jump_penalty,
            scaler_mean: mean,
            scaler_std: std,
            centres,
            regime_variances: var,
        },
        Some(info),
    )?;
    let report = SjmFitReport {
        n_rows: n,
        n_skipped,
        objective: sol.objective,
        best_init,
        inits,
        labels,
        state_frequencies: freqs,
        n_switches,
    };
    Ok((model, report))
}

impl SjmModel {
    /// Fits a model to `rows` (row-major, `n_rows × n_features`, raw values) named by
    /// `feature_names`, from `cfg.n_init` k-means++ starts. Rows with a NaN or infinity are
    /// skipped and counted in the report; the rest are one consecutive sequence. See the
    /// module docs for the algorithm and the state order.
    ///
    /// # Errors
    /// [`SjmError::StateCount`] / [`SjmError::InvalidConfig`] for the configuration;
    /// [`SjmError::Shape`], [`SjmError::FeatureCount`], [`SjmError::FeatureName`] for the
    /// inputs; [`SjmError::TooFewRows`] with fewer usable rows than states (or two);
    /// [`SjmError::ConstantFeature`]; [`SjmError::EmptyState`] when the best solution leaves a
    /// state without rows.
    pub fn fit(
        rows: &[f64],
        n_features: usize,
        feature_names: &[String],
        cfg: &SjmFitConfig,
    ) -> Result<(SjmModel, SjmFitReport), SjmError> {
        if n_features == 0 || n_features > super::MAX_FEATURES {
            return Err(SjmError::FeatureCount {
                n: n_features,
                max: super::MAX_FEATURES,
            });
        }
        fit(rows, n_features, feature_names, cfg, Starts::KMeansPlusPlus)
    }

    /// As [`SjmModel::fit`], from the given starting centres instead of k-means++ (to reproduce
    /// a reference fit): `starts` holds one or more sets of `K × F` centres, row-major, in
    /// z-scored space; `cfg.n_init` and `cfg.seed` are not used.
    ///
    /// # Errors
    /// As [`SjmModel::fit`], and [`SjmError::Shape`] / [`SjmError::NonFinite`] for `starts`.
    pub fn fit_with_starts(
        rows: &[f64],
        n_features: usize,
        feature_names: &[String],
        cfg: &SjmFitConfig,
        starts: &[f64],
    ) -> Result<(SjmModel, SjmFitReport), SjmError> {
        if n_features == 0 || n_features > super::MAX_FEATURES {
            return Err(SjmError::FeatureCount {
                n: n_features,
                max: super::MAX_FEATURES,
            });
        }
        fit(rows, n_features, feature_names, cfg, Starts::Given(starts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_clustering_is_a_bijection_test() {
        assert!(same_clustering(&[0, 0, 1, 2], &[2, 2, 0, 1]));
        assert!(!same_clustering(&[0, 0, 1, 1], &[0, 1, 1, 1]));
        assert!(!same_clustering(&[0, 1, 1], &[0, 0, 0]));
    }

    /// The DP against brute force over every path of a short sequence.
    #[test]
    fn e_step_is_the_exact_minimiser() {
        let mut rng = Xoshiro256::new(3);
        let (n, f, k) = (7, 2, 3);
        for lambda in [0.0, 0.3, 2.0, 50.0] {
            let z: Vec<f64> = (0..n * f).map(|_| rng.next_f64() * 4.0 - 2.0).collect();
            let centres: Vec<f64> = (0..k * f).map(|_| rng.next_f64() * 4.0 - 2.0).collect();
            let mut values = vec![0.0; n * k];
            let mut labels = vec![0u8; n];
            let obj = e_step(
                &z,
                n,
                f,
                k,
                &centres,
                &[true; 3],
                lambda,
                &mut values,
                &mut labels,
            );
            let cost = |path: &[usize]| {
                let mut c = 0.0;
                for (t, &s) in path.iter().enumerate() {
                    let mut d = 0.0;
                    for j in 0..f {
                        let e = z[j * n + t] - centres[s * f + j];
                        d += e * e;
                    }
                    c += 0.5 * d;
                    if t > 0 && path[t - 1] != s {
                        c += lambda;
                    }
                }
                c
            };
            let mut best = f64::INFINITY;
            let mut path = vec![0usize; n];
            for code in 0..k.pow(n as u32) {
                let mut c = code;
                for p in path.iter_mut() {
                    *p = c % k;
                    c /= k;
                }
                best = best.min(cost(&path));
            }
            let got: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
            assert!(
                (obj - best).abs() < 1e-9,
                "lambda {lambda}: {obj} vs {best}"
            );
            assert!((cost(&got) - best).abs() < 1e-9);
        }
    }
}

//! From a parsed document to a checked model: XGBoost's `Learner::LoadModel`,
//! `GBTree::LoadModel` and `RegTree::LoadModel`, with every check a hostile or damaged file
//! needs and the refusals for what this evaluator does not implement.

use super::forest::{Forest, RawTree};
use super::value::{At, Value};
use super::{Objective, XgbError, XgbModel};

/// Most features a model may declare (the bind map is allocated from this number).
const MAX_FEATURES: i64 = 1 << 24;
/// Most output groups (classes) a model may declare.
const MAX_GROUPS: i64 = 1 << 16;

/// XGBoost's `kRtEps`, the clamp applied to a probability `base_score` before the logit.
const RT_EPS: f32 = 1e-6;

fn invalid(msg: impl Into<String>) -> XgbError {
    XgbError::InvalidModel { msg: msg.into() }
}

fn tree_err(tree: usize, node: Option<usize>, msg: impl Into<String>) -> XgbError {
    XgbError::InvalidTree {
        tree,
        node,
        msg: msg.into(),
    }
}

/// Descends `root` along `keys`, failing with the path of the first missing member.
fn at<'a>(root: At<'a>, key: &str, path: &'a mut String) -> Result<At<'a>, XgbError> {
    let (v, p) = root.req(key)?;
    *path = p;
    let path: &'a String = path;
    Ok(At {
        value: v,
        path: path.as_str(),
    })
}

pub(crate) fn build(doc: &Value) -> Result<XgbModel, XgbError> {
    build_with(doc, super::forest::COMPLETE_MAX_DEPTH)
}

/// As [`build`], with the depth limit of the complete tree layout as a parameter (tests use
/// 0 to run every fixture through the linked layout).
pub(crate) fn build_with(doc: &Value, complete_max_depth: u32) -> Result<XgbModel, XgbError> {
    let root = At::root(doc);

    // version: [major, minor, patch]
    let mut p_version = String::new();
    let version = at(root, "version", &mut p_version)?;
    let parts = version.array()?;
    let nums: Vec<i64> = parts
        .iter()
        .map(|v| match v {
            Value::Int(i) => Ok(*i),
            _ => Err(XgbError::UnsupportedVersion {
                found: format!("{parts:?}"),
            }),
        })
        .collect::<Result<_, _>>()?;
    if nums.len() != 3 || !(2..=3).contains(&nums[0]) || nums[1] < 0 || nums[2] < 0 {
        return Err(XgbError::UnsupportedVersion {
            found: format!("{nums:?}"),
        });
    }
    let version = (nums[0] as u32, nums[1] as u32, nums[2] as u32);

    let mut p_learner = String::new();
    let learner = at(root, "learner", &mut p_learner)?;

    // Booster: only gbtree.
    let mut p_gb = String::new();
    let gb = at(learner, "gradient_booster", &mut p_gb)?;
    let mut p_gb_name = String::new();
    let gb_name = at(gb, "name", &mut p_gb_name)?.str()?;
    match gb_name {
        "gbtree" => {}
        "dart" => {
            return Err(XgbError::UnsupportedBooster {
                name: gb_name.to_string(),
                why: "dart scales each tree by a drop-out weight; only gbtree is evaluated",
            });
        }
        "gblinear" => {
            return Err(XgbError::UnsupportedBooster {
                name: gb_name.to_string(),
                why: "gblinear is a linear model, not trees; only gbtree is evaluated",
            });
        }
        _ => {
            return Err(XgbError::UnsupportedBooster {
                name: gb_name.to_string(),
                why: "unknown booster; only gbtree is evaluated",
            });
        }
    }

    // Objective.
    let mut p_obj = String::new();
    let obj = at(learner, "objective", &mut p_obj)?;
    let mut p_obj_name = String::new();
    let obj_name = at(obj, "name", &mut p_obj_name)?.str()?;
    let objective = match obj_name {
        "reg:squarederror" => Objective::SquaredError,
        "reg:logistic" => Objective::RegLogistic,
        "binary:logistic" => Objective::BinaryLogistic,
        "binary:logitraw" => Objective::BinaryLogitRaw,
        "multi:softprob" => Objective::MultiSoftprob,
        "multi:softmax" => Objective::MultiSoftmax,
        other => {
            return Err(XgbError::UnsupportedObjective {
                name: other.to_string(),
            });
        }
    };

    // Learner parameters (integers are stored as strings).
    let mut p_mp = String::new();
    let mp = at(learner, "learner_model_param", &mut p_mp)?;
    let mut p_nf = String::new();
    let num_feature = at(mp, "num_feature", &mut p_nf)?.int_str()?;
    if !(1..=MAX_FEATURES).contains(&num_feature) {
        return Err(invalid(format!(
            "num_feature {num_feature} is outside 1..={MAX_FEATURES}"
        )));
    }
    let n_features = num_feature as usize;
    let mut p_nc = String::new();
    let num_class = at(mp, "num_class", &mut p_nc)?.int_str()?;
    let num_target = match mp.get("num_target")? {
        Some(v) => At {
            value: v,
            path: "/learner/learner_model_param/num_target",
        }
        .int_str()?,
        None => 1,
    };
    if num_target != 1 {
        return Err(XgbError::Unsupported {
            what: format!("multi-target models (num_target = {num_target})"),
        });
    }
    let multi = matches!(
        objective,
        Objective::MultiSoftprob | Objective::MultiSoftmax
    );
    let n_groups = if multi {
        if !(1..=MAX_GROUPS).contains(&num_class) {
            return Err(invalid(format!(
                "{obj_name} with num_class {num_class} (expected 1..={MAX_GROUPS})"
            )));
        }
        if let Some(smp) = obj.get("softmax_multiclass_param")? {
            let smp = At {
                value: smp,
                path: "/learner/objective/softmax_multiclass_param",
            };
            if let Some(v) = smp.get("num_class")? {
                let k = At {
                    value: v,
                    path: "/learner/objective/softmax_multiclass_param/num_class",
                }
                .int_str()?;
                if k != num_class {
                    return Err(invalid(format!(
                        "objective num_class {k} differs from learner num_class {num_class}"
                    )));
                }
            }
        }
        num_class as usize
    } else {
        if num_class != 0 {
            return Err(invalid(format!(
                "{obj_name} with num_class {num_class} (expected 0)"
            )));
        }
        1
    };

    let mut p_bs = String::new();
    let base_text = at(mp, "base_score", &mut p_bs)?.str()?;
    let base_margin = base_margins(base_text, objective, n_groups)?;

    // Feature names and types.
    let mut feature_names = Vec::new();
    if let Some(v) = learner.get("feature_names")? {
        let names = At {
            value: v,
            path: "/learner/feature_names",
        };
        for (i, n) in names.array()?.iter().enumerate() {
            match n {
                Value::Str(s) => feature_names.push(s.clone()),
                _ => return Err(invalid(format!("feature name {i} is not a string"))),
            }
        }
        if !feature_names.is_empty() && feature_names.len() != n_features {
            return Err(invalid(format!(
                "{} feature names for num_feature {n_features}",
                feature_names.len()
            )));
        }
        let mut sorted: Vec<&str> = feature_names.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(invalid(format!("feature name \"{}\" appears twice", w[0])));
        }
    }
    if let Some(v) = learner.get("feature_types")? {
        let types = At {
            value: v,
            path: "/learner/feature_types",
        };
        for (i, t) in types.array()?.iter().enumerate() {
            if let Value::Str(s) = t
                && s == "c"
            {
                let name = feature_names
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("f{i}"));
                return Err(XgbError::Categorical {
                    detail: format!("feature {i} (\"{name}\") is categorical"),
                });
            }
        }
    }

    // Trees.
    let mut p_model = String::new();
    let model = at(gb, "model", &mut p_model)?;
    if let Some(cats) = model.get("cats")? {
        let cats = At {
            value: cats,
            path: "/learner/gradient_booster/model/cats",
        };
        if let Some(enc) = cats.get("enc")?
            && (At {
                value: enc,
                path: "/learner/gradient_booster/model/cats/enc",
            })
            .len()?
                > 0
        {
            return Err(XgbError::Categorical {
                detail: "the model carries a category encoder".to_string(),
            });
        }
    }
    let mut p_gmp = String::new();
    let gmp = at(model, "gbtree_model_param", &mut p_gmp)?;
    let mut p_nt = String::new();
    let num_trees = at(gmp, "num_trees", &mut p_nt)?.int_str()?;
    let mut p_trees = String::new();
    let trees_at = at(model, "trees", &mut p_trees)?;
    let trees_v = trees_at.array()?;
    if num_trees != trees_v.len() as i64 {
        return Err(invalid(format!(
            "num_trees is {num_trees} but {} trees are stored",
            trees_v.len()
        )));
    }
    let mut p_ti = String::new();
    let tree_info = at(model, "tree_info", &mut p_ti)?.ints()?;
    if tree_info.len() != trees_v.len() {
        return Err(invalid(format!(
            "tree_info has {} entries for {} trees",
            tree_info.len(),
            trees_v.len()
        )));
    }
    let mut groups = Vec::with_capacity(tree_info.len());
    for (i, &g) in tree_info.iter().enumerate() {
        if g < 0 || g as usize >= n_groups {
            return Err(tree_err(
                i,
                None,
                format!("output group {g} outside 0..{n_groups}"),
            ));
        }
        groups.push(g as usize);
    }

    let mut raw = Vec::with_capacity(trees_v.len());
    for (i, t) in trees_v.iter().enumerate() {
        let path = format!("/learner/gradient_booster/model/trees/{i}");
        raw.push(tree(
            At {
                value: t,
                path: &path,
            },
            i,
            n_features,
        )?);
    }

    Ok(XgbModel {
        forest: Forest::build_with(&raw, &groups, n_groups, n_features, complete_max_depth),
        base_margin,
        objective,
        n_features,
        feature_names,
        version,
    })
}

/// Parses XGBoost's `base_score` string (`"[5E-1]"`, `"[a,b,c]"` from 3.1 on, `"5E-1"`
/// before), broadcasts a scalar to every group (XGBoost's `HandleOldFormat`), checks it, and
/// turns it into the margin each group starts from (the objective's `ProbToMargin`).
fn base_margins(text: &str, objective: Objective, n_groups: usize) -> Result<Vec<f32>, XgbError> {
    let bad = |why: &str| invalid(format!("base_score \"{text}\": {why}"));
    let t = text.trim();
    let inner = match (t.strip_prefix('['), t.strip_suffix(']')) {
        (Some(_), Some(_)) => &t[1..t.len() - 1],
        (None, None) => t,
        _ => return Err(bad("unbalanced brackets")),
    };
    let mut values = Vec::new();
    for part in inner.split(',') {
        let part = part.trim();
        // Only decimal numbers; Rust's parser would also take "inf" or "nan".
        if part.is_empty()
            || !part
                .bytes()
                .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
        {
            return Err(bad("not a list of numbers"));
        }
        let v: f32 = part.parse().map_err(|_| bad("not a list of numbers"))?;
        if !v.is_finite() {
            return Err(bad("not finite"));
        }
        values.push(v);
    }
    if values.len() == 1 && n_groups > 1 {
        values.resize(n_groups, values[0]);
    }
    if values.len() != n_groups {
        return Err(bad(&format!(
            "{} values for {n_groups} output groups",
            values.len()
        )));
    }
    if matches!(
        objective,
        Objective::RegLogistic | Objective::BinaryLogistic
    ) {
        for v in &mut values {
            if !(0.0..=1.0).contains(v) {
                return Err(bad("must lie in [0, 1] for a logistic objective"));
            }
            *v = logit(*v);
        }
    }
    Ok(values)
}

/// XGBoost's `LogisticRegression::ProbToMargin`: clamp to `[1e-6, 1 - 1e-6]`, then
/// `-logf(1/x - 1)`, all in `f32`.
fn logit(p: f32) -> f32 {
    let p = if p > RT_EPS { p } else { RT_EPS };
    let hi = 1.0f32 - RT_EPS;
    let p = if p < hi { p } else { hi };
    -(1.0f32 / p - 1.0f32).ln()
}

/// Reads and checks one tree.
fn tree(t: At<'_>, i: usize, n_features: usize) -> Result<RawTree, XgbError> {
    let mut p = String::new();
    let param = at(t, "tree_param", &mut p)?;
    let mut p_nn = String::new();
    let num_nodes = at(param, "num_nodes", &mut p_nn)?.int_str()?;
    if let Some(v) = param.get("size_leaf_vector")? {
        let s = At {
            value: v,
            path: "tree_param/size_leaf_vector",
        }
        .int_str()?;
        if s > 1 {
            return Err(XgbError::Unsupported {
                what: format!("tree {i} has vector leaves (size_leaf_vector = {s})"),
            });
        }
    }
    if let Some(v) = param.get("num_feature")? {
        let nf = At {
            value: v,
            path: "tree_param/num_feature",
        }
        .int_str()?;
        if nf != n_features as i64 {
            return Err(tree_err(
                i,
                None,
                format!("tree num_feature {nf} differs from the model's {n_features}"),
            ));
        }
    }
    if num_nodes < 1 {
        return Err(tree_err(i, None, format!("num_nodes is {num_nodes}")));
    }
    let n = num_nodes as usize;

    // Categorical splits: any split_type other than numerical (0).
    if let Some(v) = t.get("split_type")? {
        let st = At {
            value: v,
            path: "split_type",
        }
        .ints()?;
        if let Some(node) = st.iter().position(|&s| s != 0) {
            return Err(XgbError::Categorical {
                detail: format!("tree {i} node {node} is a categorical split"),
            });
        }
    }
    if let Some(v) = t.get("categories")?
        && (At {
            value: v,
            path: "categories",
        })
        .len()?
            > 0
    {
        return Err(XgbError::Categorical {
            detail: format!("tree {i} lists split categories"),
        });
    }

    let arr = |key: &str| -> Result<Vec<i64>, XgbError> {
        let mut p = String::new();
        let v = at(t, key, &mut p)?.ints()?;
        if v.len() != n {
            return Err(tree_err(
                i,
                None,
                format!("{key} has {} entries for {n} nodes", v.len()),
            ));
        }
        Ok(v)
    };
    let left = arr("left_children")?;
    let right = arr("right_children")?;
    let split_indices = arr("split_indices")?;
    let default_left = arr("default_left")?;
    let mut p_sc = String::new();
    let cond = at(t, "split_conditions", &mut p_sc)?.floats()?;
    if cond.len() != n {
        return Err(tree_err(
            i,
            None,
            format!("split_conditions has {} entries for {n} nodes", cond.len()),
        ));
    }

    // Walk from the root: every child in range, every reachable node reached once (no
    // cycle, no shared subtree), and the values the walk will read are sane.
    let mut seen = vec![false; n];
    let mut depth_of = vec![0u32; n];
    let mut depth = 0u32;
    let mut stack = vec![0usize];
    seen[0] = true;
    let mut feat = vec![0u32; n];
    let mut dl = vec![false; n];
    let mut left32 = vec![-1i32; n];
    let mut right32 = vec![-1i32; n];
    while let Some(node) = stack.pop() {
        let d = depth_of[node];
        depth = depth.max(d);
        let (l, r) = (left[node], right[node]);
        if l == -1 {
            if r != -1 {
                return Err(tree_err(
                    i,
                    Some(node),
                    format!("leaf with a right child {r}"),
                ));
            }
            if !cond[node].is_finite() {
                return Err(tree_err(
                    i,
                    Some(node),
                    format!("leaf value is {}", cond[node]),
                ));
            }
            continue;
        }
        for c in [l, r] {
            if c < 0 || c as usize >= n {
                return Err(tree_err(
                    i,
                    Some(node),
                    format!("child index {c} outside 0..{n}"),
                ));
            }
            if seen[c as usize] {
                return Err(tree_err(
                    i,
                    Some(node),
                    format!("child {c} is reached twice (cycle or shared node)"),
                ));
            }
            seen[c as usize] = true;
            depth_of[c as usize] = d + 1;
            stack.push(c as usize);
        }
        let f = split_indices[node];
        if f < 0 || f as usize >= n_features {
            return Err(tree_err(
                i,
                Some(node),
                format!("split feature {f} outside 0..{n_features} (num_feature)"),
            ));
        }
        if !cond[node].is_finite() {
            return Err(tree_err(
                i,
                Some(node),
                format!("split condition is {}", cond[node]),
            ));
        }
        dl[node] = match default_left[node] {
            0 => false,
            1 => true,
            other => {
                return Err(tree_err(i, Some(node), format!("default_left is {other}")));
            }
        };
        feat[node] = f as u32;
        left32[node] = l as i32;
        right32[node] = r as i32;
    }
    Ok(RawTree {
        left: left32,
        right: right32,
        feat,
        cond,
        default_left: dl,
        depth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_score_forms() {
        let sq = Objective::SquaredError;
        assert_eq!(base_margins("[5E-1]", sq, 1).unwrap(), vec![0.5]);
        assert_eq!(base_margins("5E-1", sq, 1).unwrap(), vec![0.5]);
        assert_eq!(base_margins("5E-1", sq, 3).unwrap(), vec![0.5; 3]);
        assert_eq!(
            base_margins("[1E0,-2E0,3E-1]", Objective::MultiSoftprob, 3).unwrap(),
            vec![1.0, -2.0, 0.3]
        );
        assert_eq!(
            base_margins("[5E-1]", Objective::BinaryLogistic, 1).unwrap(),
            vec![0.0]
        );
        for bad in [
            "", "[", "[]", "[1,2]", "[nan]", "[inf]", "[1E40]", "x", "[1]]",
        ] {
            assert!(base_margins(bad, sq, 1).is_err(), "{bad}");
        }
        assert!(base_margins("[1.5]", Objective::RegLogistic, 1).is_err());
        assert!(base_margins("[-0.1]", Objective::BinaryLogistic, 1).is_err());
        // binary:logitraw takes base_score as a margin.
        assert_eq!(
            base_margins("[1.5]", Objective::BinaryLogitRaw, 1).unwrap(),
            vec![1.5]
        );
    }

    #[test]
    fn logit_clamps_like_xgboost() {
        assert_eq!(logit(0.0), logit(1e-6));
        assert_eq!(logit(1.0), logit(1.0 - 1e-6));
        assert!(logit(0.0).is_finite() && logit(1.0).is_finite());
    }
}

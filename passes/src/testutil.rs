//! Helpers for the passes' unit and differential tests.

use crate::pass::{PassCx, PassKind};
use crate::registry;
use fuselage_ir::ops::testing::rand_tensor;
use fuselage_ir::{Executor, Module, Op, Reference};
use std::collections::{BTreeMap, HashMap};

/// A `constant` op reading pool entry `name`.
pub fn constant(name: &str) -> Op {
    Op::Constant(fuselage_ir::ops::constant::Constant {
        name: name.to_string(),
    })
}

/// Run a registered pass with default options; returns (changed, stats).
pub fn run_pass(name: &str, m: &mut Module) -> (bool, BTreeMap<String, u64>) {
    run_pass_with(name, serde_json::Value::Null, m)
}

/// Run a registered pass with options; returns (changed, stats). Panics on a pass error.
pub fn run_pass_with(
    name: &str,
    options: serde_json::Value,
    m: &mut Module,
) -> (bool, BTreeMap<String, u64>) {
    let mut p = registry::create(name, &options).unwrap();
    let mut cx = PassCx::new(&Reference);
    let c = p.run(m, &mut cx).unwrap();
    crate::irx::verify(m).unwrap();
    (c.is_changed(), cx.take_stats())
}

/// Differential test: run both modules' entry functions on `seeds` random inputs (symbols bound
/// to sizes that vary with the seed; ints in [0, 2)) and require outputs within the kind's
/// tolerance. The inputs follow `after`'s signature where it fixes a dim.
pub fn assert_same_outputs(before: &Module, after: &Module, kind: PassKind, seeds: u64) {
    let tol = kind.default_tolerance();
    let eb = before.entry().unwrap();
    let ea = after.entry().unwrap();
    for seed in 0..seeds {
        let mut sizes: HashMap<String, usize> = HashMap::new();
        let tys_b = eb.input_types();
        let tys_a = ea.input_types();
        let inputs: Vec<_> = tys_b
            .iter()
            .zip(&tys_a)
            .enumerate()
            .map(|(i, (tb, ta))| {
                let shape: Vec<usize> = tb
                    .shape
                    .iter()
                    .zip(&ta.shape)
                    .map(|(db, da)| match (db.fixed(), da.fixed()) {
                        (Some(n), _) | (_, Some(n)) => n as usize,
                        _ => {
                            for s in db.symbols() {
                                let k = sizes.len();
                                sizes.entry(s).or_insert(1 + ((seed as usize + k) % 3));
                            }
                            let b: std::collections::HashMap<String, u64> =
                                sizes.iter().map(|(k, v)| (k.clone(), *v as u64)).collect();
                            db.resolve(&b).expect("test dims resolve") as usize
                        }
                    })
                    .collect();
                let t = rand_tensor(tb.dtype, shape, seed * 31 + i as u64);
                if tb.dtype.is_int() {
                    let data = t.data().iter().map(|x| x.rem_euclid(2.0)).collect();
                    fuselage_ir::Tensor::new(tb.dtype, t.shape().to_vec(), data).unwrap()
                } else {
                    t
                }
            })
            .collect();
        let ob = Reference
            .run(before, before.entry_name().unwrap(), &inputs)
            .unwrap();
        let oa = Reference
            .run(after, after.entry_name().unwrap(), &inputs)
            .unwrap();
        let names: Vec<String> = ea.outputs.iter().map(|o| o.name.clone()).collect();
        let c = crate::numeric::compare_outputs(&names, &ob, &oa, tol);
        assert!(c.passed, "seed {seed}: {}", c.summary());
    }
}

use super::*;
use proptest::prelude::*;

fn p(s: &str) -> Dim {
    Dim::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn b(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn equal_expressions_are_equal() {
    let bb = Dim::sym("B");
    assert_eq!(bb.add(&bb).unwrap(), bb.mul_int(2).unwrap());
    assert_eq!(p("2*B"), p("B+B"));
    assert_eq!(p("(S+2*S)/3"), p("S"));
    assert_eq!(p("4*(S/4)"), p("S"));
    assert_eq!(p("B*S*12"), p("12*S*B"));
    assert_eq!(p("(B+1)*(B-1)"), p("B*B-1"));
    assert_eq!(p("S - S"), Dim::from(0u64));
    assert_eq!(p("floor((2*S+3)/2)"), p("S+1"));
    assert_eq!(p("ceil((2*S+3)/2)"), p("S+2"));
    assert_eq!(p("floor(floor(S/2)/3)"), p("floor(S/6)"));
    assert_eq!(p("min(S, S+1)"), p("S"));
    assert_eq!(p("max(S, S+1)"), p("S+1"));
    assert_eq!(p("min(3, 5)"), p("3"));
    assert_ne!(p("S/4"), p("floor(S/4)"));
    assert_ne!(p("min(S, 8)"), p("S"));
}

#[test]
fn printing_is_readable_and_parses_back() {
    for (text, printed) in [
        ("2*B", "2*B"),
        ("B+B", "2*B"),
        ("S-1", "S-1"),
        ("1-S", "-S+1"),
        ("S/4", "S/4"),
        ("2*(S/4)", "2*(S/4)"),
        ("B*(S/4)", "B*(S/4)"),
        ("(S+1)/2", "(S+1)/2"),
        ("floor(S/4)", "floor(S/4)"),
        ("ceil((S+1)/2)", "ceil((S+1)/2)"),
        ("min(S,128)", "min(128,S)"),
        ("B*S", "B*S"),
        ("\"batch size\"*2", "2*\"batch size\""),
        ("min", "\"min\""),
        ("384", "384"),
    ] {
        let d = if text == "min" {
            Dim::sym("min")
        } else {
            p(text)
        };
        assert_eq!(d.to_string(), printed, "{text}");
        assert_eq!(p(&d.to_string()), d, "{text}");
    }
}

#[test]
fn resolution_checks_exactness_and_sign() {
    let d = p("S/4");
    assert_eq!(d.resolve(&b(&[("S", 8)])).unwrap(), 2);
    let e = d.resolve(&b(&[("S", 7)])).unwrap_err();
    assert!(e.to_string().contains("not an exact division"), "{e}");
    assert!(e.to_string().contains("S=7"), "{e}");
    let e = p("S-9").resolve(&b(&[("S", 7)])).unwrap_err();
    assert!(matches!(e, DimError::Negative { value: -2, .. }), "{e}");
    let e = p("B*S").resolve(&b(&[("S", 7)])).unwrap_err();
    assert_eq!(e, DimError::Unbound("B".into()));
    assert_eq!(p("floor(S/4)").resolve(&b(&[("S", 7)])).unwrap(), 1);
    assert_eq!(p("ceil(S/4)").resolve(&b(&[("S", 7)])).unwrap(), 2);
    assert_eq!(p("min(S,4)").resolve(&b(&[("S", 7)])).unwrap(), 4);
}

#[test]
fn constant_exact_division_must_divide() {
    assert!(matches!(
        Dim::from(7u64).div_exact(2),
        Err(DimError::NotDivisible { den: 2, .. })
    ));
    assert!(Dim::from(7u64).div_exact(0).is_err());
    assert_eq!(Dim::from(7u64).div_floor(2).unwrap(), Dim::from(3u64));
    assert_eq!(Dim::from(7u64).div_ceil(2).unwrap(), Dim::from(4u64));
}

#[test]
fn overflow_is_an_error_not_a_panic() {
    let big = Dim::from_i64(i64::MAX);
    assert!(big.add(&Dim::from(1u64)).is_err());
    assert!(big.mul_int(2).is_err());
    let s = Dim::sym("S").mul_int(1 << 40).unwrap();
    assert!(s.mul(&s).is_err());
    assert!(Dim::try_from_u64(u64::MAX).is_err());
    let e = p("S*S*S").resolve(&b(&[("S", 1 << 40)])).unwrap_err();
    assert!(matches!(e, DimError::Overflow(_)), "{e}");
}

#[test]
fn polynomial_division() {
    assert_eq!(p("12*B*S").div_dim(&p("S")).unwrap(), p("12*B"));
    assert_eq!(p("B*S*384").div_dim(&p("S*384")).unwrap(), p("B"));
    assert_eq!(p("B*B-1").div_dim(&p("B+1")).unwrap(), p("B-1"));
    assert_eq!(p("6*S").div_dim(&p("4")).unwrap(), p("3*S/2"));
    assert!(p("B*S").div_dim(&p("T")).is_none());
    assert!(p("B*S").div_dim(&p("0")).is_none());
    assert_eq!(p("2*B*S").div_dim(&p("2*S")).unwrap(), p("B"));
}

#[test]
fn facts_decide_min_max_and_divisibility() {
    let mut f = Facts::default();
    // Default: symbols are sizes (>= 0).
    assert_eq!(p("max(S,0)").simplify(&f).unwrap(), p("S"));
    assert_eq!(p("max(S-1,0)").simplify(&f).unwrap(), p("max(S-1,0)"));
    assert_eq!(p("min(S,1)").simplify(&f).unwrap(), p("min(S,1)"));
    f.0.insert(
        "S".into(),
        SymbolFacts {
            min: Some(1),
            ..Default::default()
        },
    );
    assert_eq!(p("max(S-1,0)").simplify(&f).unwrap(), p("S-1"));
    assert_eq!(p("min(S,1)").simplify(&f).unwrap(), p("1"));
    assert_eq!(p("min(S,2)").simplify(&f).unwrap(), p("min(S,2)"));
    f.0.insert(
        "S".into(),
        SymbolFacts {
            min: Some(8),
            max: None,
            multiple_of: Some(4),
        },
    );
    assert_eq!(p("min(S,2)").simplify(&f).unwrap(), p("2"));
    assert_eq!(p("floor(S/4)").simplify(&f).unwrap(), p("S/4"));
    assert_eq!(p("4*floor(S/4)").simplify(&f).unwrap(), p("S"));
    // S = 4·S': floor(S/8) = floor(S'/2), written back with S' = S/4.
    assert_eq!(p("floor(S/8)").simplify(&f).unwrap(), p("floor((S/4)/2)"));
    // Divisors inside divisions: a downsample then an upsample of an even size.
    f.0.insert(
        "H".into(),
        SymbolFacts {
            multiple_of: Some(2),
            ..Default::default()
        },
    );
    assert_eq!(p("2*floor((H+1)/2)").simplify(&f).unwrap(), p("H"));
    assert_eq!(p("floor((H-1)/2)+1").simplify(&f).unwrap(), p("H/2"));
    f.0.insert(
        "W".into(),
        SymbolFacts {
            multiple_of: Some(2),
            ..Default::default()
        },
    );
    assert_eq!(
        p("(H*W)/4").simplify(&f).unwrap(),
        p("(H/2)*(W/2)").simplify(&f).unwrap()
    );
    assert!(f.get("S").check("S", 12).is_ok());
    assert!(f.get("S").check("S", 6).unwrap_err().contains("S >= 8"));
    assert!(f
        .get("S")
        .check("S", 10)
        .unwrap_err()
        .contains("S % 4 == 0"));
    assert!(f.get("B").check("B", 0).is_ok());
}

#[test]
fn linear_forms_for_binding() {
    assert_eq!(p("2*B+1").as_linear(), Some(("B", 2, 1)));
    assert_eq!(p("B").as_linear(), Some(("B", 1, 0)));
    assert_eq!(p("B*S").as_linear(), None);
    assert_eq!(p("7").as_linear(), None);
}

#[test]
fn parse_errors_are_clear() {
    for bad in [
        "", "2*", "(S", "S)", "floor(S)", "S/T", "S/0", "S/-1", "min()", "\"\"", "2 3",
    ] {
        assert!(Dim::parse(bad).is_err(), "{bad:?} parsed");
    }
    let deep = format!("{}S{}", "(".repeat(200), ")".repeat(200));
    assert!(Dim::parse(&deep).is_err());
    let deep = format!("{}S/2{}", "floor(".repeat(200), ")".repeat(200));
    assert!(Dim::parse(&deep).is_err());
}

#[test]
fn serde_is_a_number_or_a_string() {
    assert_eq!(serde_json::to_string(&p("384")).unwrap(), "384");
    assert_eq!(serde_json::to_string(&p("2*B")).unwrap(), "\"2*B\"");
    let d: Dim = serde_json::from_str("\"S/4\"").unwrap();
    assert_eq!(d, p("S/4"));
    let d: Dim = serde_json::from_str("12").unwrap();
    assert_eq!(d, p("12"));
    assert!(serde_json::from_str::<Dim>("\"S/\"").is_err());
}

/// A random expression tree, evaluated independently of `Dim`.
#[derive(Clone, Debug)]
enum E {
    Int(i64),
    Sym(usize),
    Add(Box<E>, Box<E>),
    Sub(Box<E>, Box<E>),
    Mul(Box<E>, Box<E>),
    Floor(Box<E>, u64),
    Ceil(Box<E>, u64),
    Min(Box<E>, Box<E>),
    Max(Box<E>, Box<E>),
}

const SYMS: [&str; 3] = ["B", "S", "T"];

fn arb_e() -> impl Strategy<Value = E> {
    let leaf = prop_oneof![(0i64..5).prop_map(E::Int), (0usize..3).prop_map(E::Sym)];
    leaf.prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| E::Add(a.into(), b.into())),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| E::Sub(a.into(), b.into())),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| E::Mul(a.into(), b.into())),
            (inner.clone(), 1u64..5).prop_map(|(a, k)| E::Floor(a.into(), k)),
            (inner.clone(), 1u64..5).prop_map(|(a, k)| E::Ceil(a.into(), k)),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| E::Min(a.into(), b.into())),
            (inner.clone(), inner).prop_map(|(a, b)| E::Max(a.into(), b.into())),
        ]
    })
}

fn build(e: &E) -> Dim {
    match e {
        E::Int(n) => Dim::from_i64(*n),
        E::Sym(i) => Dim::sym(SYMS[*i]),
        E::Add(a, b) => build(a).add(&build(b)).unwrap(),
        E::Sub(a, b) => build(a).sub(&build(b)).unwrap(),
        E::Mul(a, b) => build(a).mul(&build(b)).unwrap(),
        E::Floor(a, k) => build(a).div_floor(*k).unwrap(),
        E::Ceil(a, k) => build(a).div_ceil(*k).unwrap(),
        E::Min(a, b) => build(a).minimum(&build(b)).unwrap(),
        E::Max(a, b) => build(a).maximum(&build(b)).unwrap(),
    }
}

fn value(e: &E, v: &[i64; 3]) -> i64 {
    match e {
        E::Int(n) => *n,
        E::Sym(i) => v[*i],
        E::Add(a, b) => value(a, v) + value(b, v),
        E::Sub(a, b) => value(a, v) - value(b, v),
        E::Mul(a, b) => value(a, v) * value(b, v),
        E::Floor(a, k) => value(a, v).div_euclid(*k as i64),
        E::Ceil(a, k) => -(-value(a, v)).div_euclid(*k as i64),
        E::Min(a, b) => value(a, v).min(value(b, v)),
        E::Max(a, b) => value(a, v).max(value(b, v)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn canonical_form_evaluates_like_the_tree(e in arb_e(), vals in proptest::array::uniform3(0i64..9)) {
        let d = build(&e);
        let bind: HashMap<String, u64> =
            SYMS.iter().zip(vals).map(|(s, x)| (s.to_string(), x as u64)).collect();
        prop_assert_eq!(d.eval(&bind).unwrap(), value(&e, &vals), "{}", d);
        // Facts-based simplification keeps the value (default facts: symbols >= 0).
        let s = d.simplify(&Facts::default()).unwrap();
        prop_assert_eq!(s.eval(&bind).unwrap(), value(&e, &vals), "{} -> {}", d, s);
    }

    #[test]
    fn simplification_with_divisors_keeps_the_value(e in arb_e(), vals in proptest::array::uniform3(0i64..5)) {
        let d = build(&e);
        let mut f = Facts::default();
        f.0.insert("S".into(), SymbolFacts { multiple_of: Some(2), ..Default::default() });
        f.0.insert("T".into(), SymbolFacts { multiple_of: Some(3), min: Some(3), ..Default::default() });
        // B free; S even; T a multiple of 3, at least 3.
        let vals = [vals[0], 2 * vals[1], 3 * (vals[2] + 1)];
        let bind: HashMap<String, u64> =
            SYMS.iter().zip(vals).map(|(s, x)| (s.to_string(), x as u64)).collect();
        let s = d.simplify(&f).unwrap();
        prop_assert_eq!(s.eval(&bind).unwrap(), value(&e, &vals), "{} -> {}", d, s);
    }

    #[test]
    fn text_round_trips(e in arb_e()) {
        let d = build(&e);
        let back = Dim::parse(&d.to_string()).unwrap();
        prop_assert_eq!(&back, &d, "printed {}", d);
        let json = serde_json::to_string(&d).unwrap();
        let back: Dim = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, d);
    }

    #[test]
    fn ring_laws_hold_canonically(a in arb_e(), b in arb_e(), c in arb_e()) {
        let (a, b, c) = (build(&a), build(&b), build(&c));
        prop_assert_eq!(a.add(&b).unwrap(), b.add(&a).unwrap());
        prop_assert_eq!(a.mul(&b).unwrap(), b.mul(&a).unwrap());
        prop_assert_eq!(a.add(&b).unwrap().add(&c).unwrap(), a.add(&b.add(&c).unwrap()).unwrap());
        prop_assert_eq!(
            a.mul(&b.add(&c).unwrap()).unwrap(),
            a.mul(&b).unwrap().add(&a.mul(&c).unwrap()).unwrap()
        );
        prop_assert_eq!(a.sub(&a).unwrap(), Dim::from(0u64));
        prop_assert_eq!(a.mul_int(3).unwrap().div_exact(3).unwrap(), a.clone());
        // Exact polynomial division undoes multiplication by a non-zero dim.
        if b.as_const().is_none_or(|k| k > 0) {
            let q = a.mul(&b).unwrap().div_dim(&b);
            prop_assert_eq!(q.as_ref(), Some(&a), "({}) * ({}) / ({})", a, b, b);
        }
    }
}

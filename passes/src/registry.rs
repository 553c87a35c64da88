//! The pass registry: one [`declare_passes!`](crate::declare_passes) list of every pass with its
//! name, options type, doc line and constructor. `fuselage passes` prints it through
//! [`passes`]; pipelines create passes through [`create`].
//!
//! Adding a pass is one file plus one line in the list at the bottom of this file. Its options
//! type implements [`PassOptions`]: declare it with [`pass_options!`](crate::pass_options) (which
//! also documents each option), or derive serde with `#[serde(deny_unknown_fields, rename_all =
//! "kebab-case", default)]` and write `impl PassOptions for MyOptions {}` (options are then
//! listed from the serialized defaults, without docs).

use crate::error::PassError;
use crate::pass::Pass;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

/// One option of a pass, for listings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OptionInfo {
    /// The key as written in pipelines (kebab-case).
    pub name: String,
    /// The Rust type (`u64`, `Option<String>`, …).
    pub ty: String,
    /// The default value.
    pub default: serde_json::Value,
    /// One-line description.
    pub doc: String,
}

/// A pass's options: serde with unknown keys rejected, kebab-case keys, and defaults.
pub trait PassOptions: Serialize + DeserializeOwned + Default + Debug + Clone {
    /// The options, their types, defaults and docs. The default lists the keys of the
    /// serialized `Self::default()` with JSON type names and no docs.
    fn fields() -> Vec<OptionInfo> {
        match serde_json::to_value(Self::default()) {
            Ok(serde_json::Value::Object(m)) => m
                .into_iter()
                .map(|(k, v)| OptionInfo {
                    name: k,
                    ty: json_type_name(&v).to_string(),
                    default: v,
                    doc: String::new(),
                })
                .collect(),
            _ => vec![],
        }
    }
}

fn json_type_name(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "optional",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(n) if n.is_f64() => "float",
        serde_json::Value::Number(_) => "int",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "list",
        serde_json::Value::Object(_) => "table",
    }
}

/// Declare a pass options struct: serde (unknown keys rejected, kebab-case keys, every field
/// defaulted), a `Default` from the given values, and a [`PassOptions`] impl that lists each
/// field with its type, default and doc line.
///
/// ```
/// fuselage_passes::pass_options! {
///     /// Options of a pass.
///     pub struct MyOptions {
///         /// Largest constant a fold may create, in bytes.
///         max_bytes: u64 = 1 << 20,
///     }
/// }
/// use fuselage_passes::registry::PassOptions;
/// assert_eq!(MyOptions::fields()[0].name, "max-bytes");
/// assert_eq!(MyOptions::default().max_bytes, 1 << 20);
/// ```
#[macro_export]
macro_rules! pass_options {
    (
        $(#[doc = $sdoc:literal])*
        pub struct $name:ident {
            $( $(#[doc = $fdoc:literal])+ $field:ident : $ty:ty = $default:expr ),* $(,)?
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Clone, Debug, PartialEq, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
        pub struct $name {
            $( $(#[doc = $fdoc])+ pub $field: $ty, )*
        }

        impl ::std::default::Default for $name {
            fn default() -> Self {
                $name { $( $field: $default, )* }
            }
        }

        impl $crate::registry::PassOptions for $name {
            #[allow(unused_variables)]
            fn fields() -> ::std::vec::Vec<$crate::registry::OptionInfo> {
                let d = <$name as ::std::default::Default>::default();
                vec![$(
                    $crate::registry::OptionInfo {
                        name: stringify!($field).replace('_', "-"),
                        ty: stringify!($ty).replace(' ', ""),
                        default: ::serde_json::to_value(&d.$field)
                            .unwrap_or(::serde_json::Value::Null),
                        doc: [$($fdoc),+].iter().map(|s| s.trim()).collect::<Vec<_>>().join(" "),
                    },
                )*]
            }
        }
    };
}

/// A registered pass, for listings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PassInfo {
    /// Name used in pipelines.
    pub name: &'static str,
    /// One-line description.
    pub doc: &'static str,
    /// Its options.
    pub options: Vec<OptionInfo>,
}

/// Decode options for `pass` from a JSON value (`null` or an object), rejecting unknown keys with
/// a message that names the allowed ones.
pub fn parse_options<O: PassOptions>(
    pass: &str,
    value: &serde_json::Value,
) -> Result<O, PassError> {
    let err = |message: String| PassError::Options {
        pass: pass.to_string(),
        message,
    };
    let obj = match value {
        serde_json::Value::Null => return Ok(O::default()),
        serde_json::Value::Object(m) => m,
        other => return Err(err(format!("options must be a table, found `{other}`"))),
    };
    let fields = O::fields();
    for k in obj.keys() {
        if !fields.iter().any(|f| &f.name == k) {
            let allowed = if fields.is_empty() {
                "this pass takes no options".to_string()
            } else {
                format!(
                    "allowed: {}",
                    fields
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(err(format!("unknown option `{k}` ({allowed})")));
        }
    }
    serde_json::from_value(value.clone()).map_err(|e| {
        // Name the offending key: decode each key alone and report the first that fails.
        for (k, v) in obj {
            let one = serde_json::Value::Object([(k.clone(), v.clone())].into_iter().collect());
            if let Err(e1) = serde_json::from_value::<O>(one) {
                return err(format!("bad value for option `{k}`: {e1}"));
            }
        }
        err(format!("bad options: {e}"))
    })
}

/// Build the registry from the list of passes: `"name" => constructor, OptionsType, "doc";`.
/// The constructor is `fn(OptionsType) -> Result<impl Pass, PassError>`.
#[macro_export]
macro_rules! declare_passes {
    ($( $name:literal => $ctor:expr, $opts:ty, $doc:literal; )*) => {
        /// Names of all registered passes, in registry order.
        pub const PASS_NAMES: &[&str] = &[$($name),*];

        /// Every registered pass with its doc line and options.
        pub fn passes() -> Vec<PassInfo> {
            vec![$(
                PassInfo {
                    name: $name,
                    doc: $doc,
                    options: <$opts as PassOptions>::fields(),
                },
            )*]
        }

        /// Create a pass from its name and options (`null` or an object with kebab-case keys).
        /// An unknown pass or option key is an error naming the allowed ones.
        pub fn create(name: &str, options: &serde_json::Value)
            -> Result<Box<dyn Pass>, PassError> {
            match name {
                $(
                    $name => {
                        let o: $opts = parse_options($name, options)?;
                        let p = ($ctor)(o)?;
                        Ok(Box::new(p))
                    }
                )*
                _ => Err(PassError::UnknownPass {
                    name: name.to_string(),
                    allowed: PASS_NAMES.join(", "),
                }),
            }
        }
    };
}

/// Create a pass from its name and a TOML options table (as in pipeline files).
pub fn create_from_toml(name: &str, options: &toml::Value) -> Result<Box<dyn Pass>, PassError> {
    let json = serde_json::to_value(options).map_err(|e| PassError::Options {
        pass: name.to_string(),
        message: format!("options are not representable: {e}"),
    })?;
    create(name, &json)
}

// The registry. One line per pass; keep it easy to append to.
declare_passes! {
    "dce" => crate::dce::Dce::new, crate::dce::DceOptions,
        "Remove nodes whose results no output uses (inputs are kept) and unused constants.";
    "cse" => crate::cse::Cse::new, crate::cse::CseOptions,
        "Merge nodes with equal op and attributes, equal operands and equal result types.";
    "fold-constants" => crate::fold_constants::FoldConstants::new,
        crate::fold_constants::FoldConstantsOptions,
        "Evaluate nodes whose operands are all constants and replace them by dense constants.";
    "shape-infer" => crate::shape_infer::ShapeInfer::new, crate::shape_infer::ShapeInferOptions,
        "Bind symbolic dims to sizes (`bind=\"B=1,S=128\"`) and re-infer every result type.";
    "canonicalize" => crate::canonicalize::Canonicalize::create,
        crate::canonicalize::CanonicalizeOptions,
        "Equality saturation with egg over rules/*.rules (fusions, identities), DAG-aware extraction.";
    "kv-cache" => crate::kv_cache::KvCache::new, crate::kv_cache::KvCacheOptions,
        "Add a KV-cache decode function (past keys/values in, present out, positions shifted).";
    "hero-quantize" => crate::hero_quantize::HeroQuantize::new,
        crate::hero_quantize::HeroQuantizeOptions,
        "W8A8 (ZeroQuant-HERO, cpu preset): every GEMM on a constant weight to qlinear with token-wise INT8 inputs and per-channel INT8 weights; per-module overrides by glob.";
    "precision" => crate::precision::Precision::new, crate::precision::PrecisionOptions,
        "Move float computation to another dtype (f32 -> bf16): constants, dtype attributes, inputs; interfaces kept by casts.";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pass_is_created_with_defaults_and_has_its_name() {
        for info in passes() {
            let p = create(info.name, &serde_json::Value::Null).unwrap();
            assert_eq!(p.name(), info.name);
            assert!(!info.doc.is_empty());
            let p = create(info.name, &serde_json::json!({})).unwrap();
            assert_eq!(p.name(), info.name);
        }
        assert_eq!(PASS_NAMES.len(), passes().len());
    }

    #[test]
    fn unknown_pass_names_the_allowed_ones() {
        let e = create("dse", &serde_json::Value::Null)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("unknown pass `dse`"), "{e}");
        assert!(e.contains("dce, cse, fold-constants"), "{e}");
    }

    #[test]
    fn unknown_option_names_the_allowed_ones() {
        let e = create("fold-constants", &serde_json::json!({"max-byte": 3}))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("unknown option `max-byte`"), "{e}");
        assert!(e.contains("allowed: max-bytes"), "{e}");
        let e = create("dce", &serde_json::json!({"x": 1}))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("takes no options"), "{e}");
        let e = create("fold-constants", &serde_json::json!({"max-bytes": "big"}))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("bad value for option `max-bytes`") && e.contains("u64"),
            "{e}"
        );
        let e = create("fold-constants", &serde_json::json!(3))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("must be a table"), "{e}");
    }

    #[test]
    fn options_are_listed_with_types_defaults_and_docs() {
        let fold = passes()
            .into_iter()
            .find(|p| p.name == "fold-constants")
            .unwrap();
        let mb = &fold.options[0];
        assert_eq!(mb.name, "max-bytes");
        assert_eq!(mb.ty, "u64");
        assert_eq!(mb.default, serde_json::json!(64u64 << 20));
        assert!(!mb.doc.is_empty());
    }

    #[test]
    fn toml_options_are_accepted() {
        let t: toml::Value = toml::from_str("max-bytes = 10").unwrap();
        let p = create_from_toml("fold-constants", &t).unwrap();
        assert_eq!(p.name(), "fold-constants");
    }

    #[test]
    fn default_options_listing_uses_serialized_defaults() {
        #[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
        struct O {
            node_limit: u64,
            name: Option<String>,
        }
        impl PassOptions for O {}
        let f = O::fields();
        assert_eq!(f.len(), 2);
        let get = |n: &str| f.iter().find(|o| o.name == n).unwrap();
        assert_eq!(get("node-limit").ty, "int");
        assert_eq!(get("name").ty, "optional");
        let o: O = parse_options("p", &serde_json::json!({"node-limit": 5})).unwrap();
        assert_eq!(o.node_limit, 5);
    }
}

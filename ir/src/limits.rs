//! Limits that protect against hostile or mistaken sizes: a memory budget checked against
//! declared sizes before anything is allocated.

/// The memory budget in bytes: `FUSELAGE_MEMORY_BUDGET` (bytes, or with a `K`/`M`/`G`/`T`
/// suffix, powers of 1024) when set and valid, else the machine's physical memory (from
/// `/proc/meminfo`), else 64 GiB.
pub fn memory_budget() -> u64 {
    if let Ok(s) = std::env::var("FUSELAGE_MEMORY_BUDGET") {
        if let Some(v) = parse_bytes(&s) {
            return v;
        }
    }
    physical_memory().unwrap_or(64 << 30)
}

/// Parse `123`, `16K`, `512M`, `8G`, `1T` (powers of 1024; a trailing `B`/`iB` is allowed).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s
        .strip_suffix("iB")
        .or_else(|| s.strip_suffix('B'))
        .unwrap_or(s);
    let (num, mul) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1u64 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        'T' | 't' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mul)
}

/// Physical memory, read once per process (the checks run on every lowered run).
fn physical_memory() -> Option<u64> {
    static TOTAL: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *TOTAL.get_or_init(read_physical_memory)
}

fn read_physical_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// Check that a value of `elements` elements, each held in `bytes_each` bytes, fits the
/// memory budget; the message names `what` and the sizes.
pub fn check_budget(what: &str, elements: u128, bytes_each: u128) -> Result<(), String> {
    let budget = memory_budget();
    let bytes = elements.saturating_mul(bytes_each);
    if bytes > budget as u128 {
        return Err(format!(
            "{what} needs {bytes} bytes ({elements} elements), over the memory budget of \
             {budget} bytes (set FUSELAGE_MEMORY_BUDGET to change it)"
        ));
    }
    Ok(())
}

/// Element count of a shape of fixed dims as `u128` (cannot overflow for rank < 2).
pub fn elements(shape: &[usize]) -> u128 {
    shape
        .iter()
        .fold(1u128, |a, &d| a.saturating_mul(d as u128))
}

/// Bytes of `elements` values of `bits` bits each, rounded up; `None` on overflow.
pub fn bytes_of(elements: u64, bits: usize) -> Option<u64> {
    elements.checked_mul(bits as u64).map(|b| b.div_ceil(8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_bytes("123"), Some(123));
        assert_eq!(parse_bytes("16K"), Some(16 << 10));
        assert_eq!(parse_bytes("2GiB"), Some(2 << 30));
        assert_eq!(parse_bytes("1T"), Some(1 << 40));
        assert_eq!(parse_bytes("x"), None);
        assert_eq!(parse_bytes("99999999999999T"), None);
        assert!(memory_budget() > 0);
        assert_eq!(bytes_of(3, 4), Some(2));
        assert_eq!(bytes_of(u64::MAX, 8), None);
    }
}

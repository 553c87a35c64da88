//! The instruction-set features of the CPU this process runs on, detected once.
//!
//! The kernel registry's guards ([`KernelEntry::guard`](super::registry::KernelEntry)) read
//! them; `fuselage kernels` prints them. On x86-64 they come from `is_x86_feature_detected!`
//! (which also checks that the OS saves the wider registers) and, for AMX, from CPUID leaf 7
//! together with the XCR0 bits that say the OS manages the tile state. Every feature is `false`
//! on other architectures. (The `multiversion!` macro of the row kernels keeps its own checks.)

use std::sync::OnceLock;

/// Instruction-set features of the running CPU (x86-64 names; all false elsewhere).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuFeatures {
    /// AVX2 (256-bit integer and float vectors).
    pub avx2: bool,
    /// Fused multiply-add (FMA3).
    pub fma: bool,
    /// F16C: f16 ⇄ f32 conversions.
    pub f16c: bool,
    /// AVX-VNNI: 256-bit int8/int16 dot products (VEX encoding).
    pub avx_vnni: bool,
    /// AVX-512 Foundation.
    pub avx512f: bool,
    /// AVX-512 byte and word instructions.
    pub avx512bw: bool,
    /// AVX-512 doubleword and quadword instructions.
    pub avx512dq: bool,
    /// AVX-512 vector-length extensions (AVX-512 ops on 128/256-bit vectors).
    pub avx512vl: bool,
    /// AVX-512 VNNI: int8/int16 dot products.
    pub avx512_vnni: bool,
    /// AVX-512 BF16: bf16 dot products and conversions.
    pub avx512_bf16: bool,
    /// AVX-512 FP16: f16 arithmetic.
    pub avx512_fp16: bool,
    /// AMX tile architecture (CPUID, and tile state enabled by the OS).
    pub amx_tile: bool,
    /// AMX int8 tile multiplication.
    pub amx_int8: bool,
    /// AMX bf16 tile multiplication.
    pub amx_bf16: bool,
    /// AMX f16 tile multiplication.
    pub amx_fp16: bool,
}

impl CpuFeatures {
    /// The features of this CPU, detected on the first call and cached for the process.
    pub fn get() -> &'static CpuFeatures {
        static FEATURES: OnceLock<CpuFeatures> = OnceLock::new();
        FEATURES.get_or_init(CpuFeatures::detect)
    }

    /// Detects the features now (uncached; [`CpuFeatures::get`] is the cached form).
    pub fn detect() -> CpuFeatures {
        detect()
    }

    /// Every feature by name (the names `fuselage kernels` prints), in a fixed order.
    pub fn list(&self) -> [(&'static str, bool); 15] {
        [
            ("avx2", self.avx2),
            ("fma", self.fma),
            ("f16c", self.f16c),
            ("avx_vnni", self.avx_vnni),
            ("avx512f", self.avx512f),
            ("avx512bw", self.avx512bw),
            ("avx512dq", self.avx512dq),
            ("avx512vl", self.avx512vl),
            ("avx512_vnni", self.avx512_vnni),
            ("avx512_bf16", self.avx512_bf16),
            ("avx512_fp16", self.avx512_fp16),
            ("amx_tile", self.amx_tile),
            ("amx_int8", self.amx_int8),
            ("amx_bf16", self.amx_bf16),
            ("amx_fp16", self.amx_fp16),
        ]
    }

    /// The names of the features present, space-separated (`none` when there are none).
    pub fn summary(&self) -> String {
        let on: Vec<&str> = self
            .list()
            .iter()
            .filter(|(_, v)| *v)
            .map(|(n, _)| *n)
            .collect();
        if on.is_empty() {
            "none".into()
        } else {
            on.join(" ")
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn detect() -> CpuFeatures {
    use std::arch::is_x86_feature_detected as has;
    let amx = amx();
    CpuFeatures {
        avx2: has!("avx2"),
        fma: has!("fma"),
        f16c: has!("f16c"),
        avx_vnni: has!("avxvnni"),
        avx512f: has!("avx512f"),
        avx512bw: has!("avx512bw"),
        avx512dq: has!("avx512dq"),
        avx512vl: has!("avx512vl"),
        avx512_vnni: has!("avx512vnni"),
        avx512_bf16: has!("avx512bf16"),
        avx512_fp16: has!("avx512fp16"),
        amx_tile: amx.tile,
        amx_int8: amx.int8,
        amx_bf16: amx.bf16,
        amx_fp16: amx.fp16,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> CpuFeatures {
    CpuFeatures::default()
}

/// AMX support as CPUID reports it, masked by the OS's tile-state enabling (XCR0 bits 17, 18).
#[cfg(target_arch = "x86_64")]
#[derive(Default)]
struct Amx {
    tile: bool,
    int8: bool,
    bf16: bool,
    fp16: bool,
}

// `__cpuid_count` is a safe function on recent compilers and an unsafe one on the workspace's
// minimum (1.87): the blocks stay.
#[cfg(target_arch = "x86_64")]
#[allow(unused_unsafe)]
fn amx() -> Amx {
    use std::arch::x86_64::__cpuid_count;
    // SAFETY: CPUID exists on every x86-64 CPU; leaf 0 gives the highest standard leaf.
    let max_leaf = unsafe { __cpuid_count(0, 0) }.eax;
    if max_leaf < 7 || !std::arch::is_x86_feature_detected!("xsave") {
        return Amx::default();
    }
    // SAFETY: leaf 7 is within the range leaf 0 reported.
    let l7 = unsafe { __cpuid_count(7, 0) };
    // SAFETY: as above; sub-leaf 1 of leaf 7 reads as zeros where it is not implemented.
    let l7_1 = unsafe { __cpuid_count(7, 1) };
    let bit = |reg: u32, b: u32| reg >> b & 1 == 1;
    // OSXSAVE (CPUID.1:ECX bit 27) makes XGETBV usable.
    // SAFETY: leaf 1 exists on every x86-64 CPU.
    let osxsave = bit(unsafe { __cpuid_count(1, 0) }.ecx, 27);
    if !osxsave {
        return Amx::default();
    }
    // SAFETY: XSAVE and OSXSAVE are present, so XGETBV with ECX = 0 is defined.
    let xcr0 = unsafe { xgetbv0() };
    let os_tiles = xcr0 >> 17 & 0b11 == 0b11;
    if !os_tiles {
        return Amx::default();
    }
    Amx {
        tile: bit(l7.edx, 24),
        int8: bit(l7.edx, 25),
        bf16: bit(l7.edx, 22),
        fp16: bit(l7_1.eax, 21),
    }
}

/// XCR0 (the state components the OS saves and restores).
///
/// # Safety
/// The CPU must have XSAVE and the OS must have set CR4.OSXSAVE.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "xsave")]
unsafe fn xgetbv0() -> u64 {
    std::arch::x86_64::_xgetbv(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_are_detected_once_and_consistently() {
        let a = CpuFeatures::get();
        let b = CpuFeatures::get();
        assert!(std::ptr::eq(a, b));
        assert_eq!(*a, CpuFeatures::detect());
        // Implications every CPU honours: AVX-512 extensions need the foundation, AMX
        // multiplication needs the tile architecture.
        if a.avx512bw || a.avx512vl || a.avx512dq || a.avx512_vnni || a.avx512_bf16 {
            assert!(a.avx512f, "{a:?}");
        }
        if a.amx_int8 || a.amx_bf16 || a.amx_fp16 {
            assert!(a.amx_tile, "{a:?}");
        }
        #[cfg(target_arch = "x86_64")]
        assert_eq!(a.avx2, std::arch::is_x86_feature_detected!("avx2"));
        #[cfg(not(target_arch = "x86_64"))]
        assert_eq!(*a, CpuFeatures::default());
        assert_eq!(a.summary() == "none", a.list().iter().all(|(_, v)| !v));
    }
}

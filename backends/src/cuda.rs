//! Run-time probe of the CUDA driver, so that selecting the CUDA backend without a GPU is an
//! error rather than a panic inside burn-cuda (0.21 panics on first use when libcuda or a device
//! is missing).

use crate::lower::LowerError;

/// Load libcuda, initialize the driver and count devices. `Ok(n)` with `n >= 1` when a CUDA
/// device can be used; an error saying what is missing otherwise.
pub fn probe() -> Result<usize, LowerError> {
    #[cfg(windows)]
    let names = ["nvcuda.dll"];
    #[cfg(not(windows))]
    let names = ["libcuda.so.1", "libcuda.so"];
    let mut tried = Vec::new();
    for name in names {
        // SAFETY: loading the CUDA driver library runs its (trusted, vendor) initializers only.
        let lib = match unsafe { libloading::Library::new(name) } {
            Ok(l) => l,
            Err(e) => {
                tried.push(e.to_string());
                continue;
            }
        };
        type Init = unsafe extern "C" fn(u32) -> i32;
        type Count = unsafe extern "C" fn(*mut i32) -> i32;
        // SAFETY: the symbols have these C signatures in every CUDA driver API version.
        let (init, count) = unsafe {
            let init: libloading::Symbol<Init> = lib
                .get(b"cuInit\0")
                .map_err(|e| LowerError::Backend(format!("{name}: no cuInit: {e}")))?;
            let count: libloading::Symbol<Count> = lib
                .get(b"cuDeviceGetCount\0")
                .map_err(|e| LowerError::Backend(format!("{name}: no cuDeviceGetCount: {e}")))?;
            (*init, *count)
        };
        // SAFETY: plain driver calls with a valid out-pointer.
        let rc = unsafe { init(0) };
        if rc != 0 {
            return Err(LowerError::Backend(format!(
                "the CUDA driver ({name}) failed to initialize (CUresult {rc}): no usable GPU"
            )));
        }
        let mut n = 0i32;
        // SAFETY: as above.
        let rc = unsafe { count(&mut n) };
        if rc != 0 || n <= 0 {
            return Err(LowerError::Backend(format!(
                "the CUDA driver ({name}) reports no device (CUresult {rc}, {n} devices)"
            )));
        }
        std::mem::forget(lib); // burn-cuda will use the driver for the rest of the process
        return Ok(n as usize);
    }
    Err(LowerError::Backend(format!(
        "the CUDA backend needs an NVIDIA driver (libcuda), which could not be loaded: {}",
        tried.join("; ")
    )))
}

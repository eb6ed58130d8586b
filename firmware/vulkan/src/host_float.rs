//! The host CPU's float environment, for modelling non-conforming devices
//! with the CPU reference (the certification diagnosis and the
//! cross-implementation tests; docs/certification.md, "Diagnosis").
//!
//! A device that flushes subnormals, or rounds another way, gives the bits
//! the CPU reference gives when the host's SSE unit is told to do the same:
//! the reference performs exactly the kernel's operations, one binary32
//! instruction each. [`with_env`] runs a closure with MXCSR's DAZ
//! (subnormal inputs read as zero), FTZ (subnormal results flushed) and
//! rounding-control bits set, on the current thread only, and restores
//! them afterwards. It is a model for diagnosis and tests, never a
//! reference: certification verdicts compare with the default environment.
//!
//! It lives here because it needs `unsafe` (the MXCSR intrinsics), which
//! only this crate may use.

/// Rounding direction of the host's binary32 operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rounding {
    NearestEven,
    Down,
    Up,
    TowardZero,
}

/// A float environment: subnormal handling and rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FloatEnv {
    /// Subnormal inputs of every operation are read as (signed) zero.
    pub flush_inputs: bool,
    /// Subnormal results of every operation are flushed to (signed) zero.
    pub flush_outputs: bool,
    pub rounding: Rounding,
}

impl FloatEnv {
    /// IEEE-754 defaults: what the float model requires.
    pub const IEEE: FloatEnv = FloatEnv {
        flush_inputs: false,
        flush_outputs: false,
        rounding: Rounding::NearestEven,
    };

    /// A device that flushes subnormals on input and output (FTZ + DAZ).
    pub const FLUSH_BOTH: FloatEnv = FloatEnv {
        flush_inputs: true,
        flush_outputs: true,
        rounding: Rounding::NearestEven,
    };

    #[cfg(target_arch = "x86_64")]
    fn mxcsr_bits(self) -> u32 {
        const DAZ: u32 = 1 << 6;
        const FTZ: u32 = 1 << 15;
        let rc = match self.rounding {
            Rounding::NearestEven => 0,
            Rounding::Down => 1,
            Rounding::Up => 2,
            Rounding::TowardZero => 3,
        };
        (if self.flush_inputs { DAZ } else { 0 })
            | (if self.flush_outputs { FTZ } else { 0 })
            | (rc << 13)
    }
}

/// This thread's float environment now (`None` where not x86-64).
///
/// A driver that runs shaders on the calling thread may leave it changed:
/// SwiftShader sets DAZ and FTZ for its shaders. Code that computes the
/// CPU reference in a process that also drives such a device should do so
/// inside `with_env(FloatEnv::IEEE, ...)`.
pub fn current() -> Option<FloatEnv> {
    #[cfg(target_arch = "x86_64")]
    {
        #[allow(deprecated)]
        use std::arch::x86_64::_mm_getcsr;
        // SAFETY: reading MXCSR has no side effect; SSE2 is part of x86-64.
        #[allow(deprecated)]
        let bits = unsafe { _mm_getcsr() };
        Some(FloatEnv {
            flush_inputs: bits & (1 << 6) != 0,
            flush_outputs: bits & (1 << 15) != 0,
            rounding: match (bits >> 13) & 3 {
                0 => Rounding::NearestEven,
                1 => Rounding::Down,
                2 => Rounding::Up,
                _ => Rounding::TowardZero,
            },
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// Whether [`with_env`] can model environments on this host.
pub fn supported() -> bool {
    cfg!(target_arch = "x86_64")
}

/// Runs `f` on this thread with the float environment `env`, then restores
/// the previous one (also if `f` panics). Returns `None`, without running
/// `f`, where the host cannot model it (not x86-64).
pub fn with_env<R>(env: FloatEnv, f: impl FnOnce() -> R) -> Option<R> {
    #[cfg(target_arch = "x86_64")]
    {
        #[allow(deprecated)]
        use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
        const MODE_BITS: u32 = (1 << 6) | (1 << 15) | (3 << 13);
        struct Restore(u32);
        impl Drop for Restore {
            fn drop(&mut self) {
                // SAFETY: writes back the MXCSR value read before; SSE2 is
                // part of x86-64, and the register is per thread.
                #[allow(deprecated)]
                unsafe {
                    _mm_setcsr(self.0)
                };
            }
        }
        // SAFETY: reading MXCSR has no side effect; SSE2 is part of x86-64.
        #[allow(deprecated)]
        let old = unsafe { _mm_getcsr() };
        let _restore = Restore(old);
        // SAFETY: only the DAZ, FTZ and rounding-control bits change, and
        // only on this thread until `_restore` puts them back. They change
        // the results of float instructions (what this model is for), not
        // memory safety: exception masks stay as they were, so no float
        // operation traps.
        #[allow(deprecated)]
        unsafe {
            _mm_setcsr((old & !MODE_BITS) | env.mxcsr_bits())
        };
        Some(f())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (env, f);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn mul(a: f32, b: f32) -> f32 {
        std::hint::black_box(a) * std::hint::black_box(b)
    }

    #[inline(never)]
    fn add(a: f32, b: f32) -> f32 {
        std::hint::black_box(a) + std::hint::black_box(b)
    }

    #[test]
    fn environments_change_results_and_are_restored() {
        if !supported() {
            return;
        }
        let tiny = f32::from_bits(0x0080_0000); // smallest normal
        let half = 0.5f32;
        let sub = f32::from_bits(0x0000_0001); // smallest subnormal
        assert_eq!(mul(tiny, half).to_bits(), 0x0040_0000);
        let ftz = FloatEnv {
            flush_inputs: false,
            flush_outputs: true,
            rounding: Rounding::NearestEven,
        };
        assert_eq!(with_env(ftz, || mul(tiny, half).to_bits()), Some(0));
        let daz = FloatEnv {
            flush_inputs: true,
            flush_outputs: false,
            rounding: Rounding::NearestEven,
        };
        assert_eq!(with_env(daz, || add(sub, sub).to_bits()), Some(0));
        assert_eq!(
            with_env(FloatEnv::IEEE, || add(sub, sub).to_bits()),
            Some(2)
        );
        let rz = FloatEnv {
            rounding: Rounding::TowardZero,
            ..FloatEnv::IEEE
        };
        // 1 + 0.75 ulp rounds up to nearest, down toward zero.
        let x = f32::from_bits(0x3f80_0000);
        let y = f32::from_bits(0x3380_0000) * 1.5; // 0.75 ulp of 1
        assert_eq!(add(x, y).to_bits(), 0x3f80_0001);
        assert_eq!(with_env(rz, || add(x, y).to_bits()), Some(0x3f80_0000));
        // Restored afterwards.
        assert_eq!(add(sub, sub).to_bits(), 2);
        assert_eq!(mul(tiny, half).to_bits(), 0x0040_0000);
    }
}

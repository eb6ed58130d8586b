// Lockstep float model: the execution modes and helpers every kernel includes.
// See docs/float-model.md. Everything here exists to take latitude away from
// the driver: the Vulkan spec lets devices differ wherever these are absent.

#extension GL_EXT_spirv_intrinsics : require

// RoundingModeRTE (mode 4462, capability 4467) for 32-bit floats: without it a
// "correctly rounded" add may round either way. Absent only from the
// test-only portable bundle (LOCKSTEP_PORTABLE), which is loaded on devices
// that do not advertise RTE, for non-conforming cross-implementation tests.
#ifndef LOCKSTEP_PORTABLE
spirv_execution_mode(extensions = ["SPV_KHR_float_controls"], capabilities = [4467], 4462, 32);
#endif
// SignedZeroInfNanPreserve (mode 4461, capability 4466): without it the
// compiler may assume no NaN/inf and fold inf - inf to +0.0.
spirv_execution_mode(extensions = ["SPV_KHR_float_controls"], capabilities = [4466], 4461, 32);
#ifdef LOCKSTEP_DENORM_PRESERVE
// DenormPreserve (mode 4459, capability 4464): only in the variant loaded on
// devices that advertise shaderDenormPreserveFloat32.
spirv_execution_mode(extensions = ["SPV_KHR_float_controls"], capabilities = [4464], 4459, 32);
#endif

const uint CANONICAL_NAN_BITS = 0x7FC00000u;

// NaN test on the bits, so that it cannot be optimised away or depend on how a
// driver implements isnan().
bool is_nan(float x) {
    return (floatBitsToUint(x) & 0x7FFFFFFFu) > 0x7F800000u;
}

// Every NaN a kernel stores is the canonical quiet NaN; payloads and signs of
// NaNs are not specified by Vulkan and differ between devices.
float canon(float x) {
    return is_nan(x) ? uintBitsToFloat(CANONICAL_NAN_BITS) : x;
}

//! A library that says it speaks plugin ABI 999: a host must refuse it
//! before asking it for anything else.

/// The ABI this library claims.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn orca_plugin_abi_version() -> u32 {
    999
}

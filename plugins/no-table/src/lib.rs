//! A library that speaks plugin ABI 1 but exports no table.

/// The ABI this library claims.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn orca_plugin_abi_version() -> u32 {
    1
}

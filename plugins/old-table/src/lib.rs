//! A library that speaks plugin ABI 1 but whose table is the size an
//! older build had: a host must refuse it without reading further.

/// A table shorter than the host's.
#[repr(C)]
pub struct Old {
    size: usize,
    abi_version: u32,
}

static TABLE: Old = Old {
    size: std::mem::size_of::<Old>(),
    abi_version: 1,
};

/// The ABI this library claims.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn orca_plugin_abi_version() -> u32 {
    1
}

/// Its (short) table.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn orca_plugin_v1() -> *const Old {
    &TABLE
}

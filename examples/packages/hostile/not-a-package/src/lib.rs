//! Hostile test library: a perfectly good cdylib that is not a Cloacina package (it exports
//! no `cloacina_plugin_abi_version`).

#[unsafe(no_mangle)]
pub extern "C" fn add(a: u32, b: u32) -> u32 {
    a.wrapping_add(b)
}

//! Hostile test library: says it speaks plugin ABI version 999. The host must refuse it after
//! calling only `cloacina_plugin_abi_version`.

#[unsafe(no_mangle)]
pub extern "C" fn cloacina_plugin_abi_version() -> u32 {
    999
}

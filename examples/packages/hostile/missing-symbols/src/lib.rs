//! Hostile test library: speaks the right ABI version and can describe itself, but exports
//! neither `cloacina_plugin_run_task`, `cloacina_plugin_poll_trigger` nor
//! `cloacina_plugin_run_graph` (as if built by a hand-rolled or outdated exporter). The host
//! must name the missing symbols.

use cloacina_workflow::abi::{ABI_VERSION, PluginBuffer};

#[unsafe(no_mangle)]
pub extern "C" fn cloacina_plugin_abi_version() -> u32 {
    ABI_VERSION
}

#[unsafe(no_mangle)]
pub extern "C" fn cloacina_plugin_describe() -> PluginBuffer {
    PluginBuffer::from_vec(
        br#"{"ok":{"name":"missing-symbols","version":"0.0.1","abi_version":1}}"#.to_vec(),
    )
}

/// # Safety
/// `buffer` must come from this library and be freed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cloacina_plugin_free(buffer: PluginBuffer) {
    // SAFETY: the caller gives back a buffer made by PluginBuffer::from_vec here, once.
    unsafe { buffer.release() }
}

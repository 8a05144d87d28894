//! One module per noun.

pub mod daemon;
pub mod package;
pub mod scaffold;

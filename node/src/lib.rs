//! The node agent's library: one module per concern, each driven by a subcommand of [`cli`].

pub mod cli;
pub mod configure;
pub mod kubeletconfig;
pub mod listeners;
pub mod pki;
pub mod probe;

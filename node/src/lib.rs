//! The node agent's library: one module per concern, each driven by a subcommand of [`cli`].

#![recursion_limit = "256"]

pub mod agent;
pub mod bootstrap;
pub mod cli;
pub mod configure;
pub mod drain;
pub mod filterconfig;
pub mod istio;
pub mod kubeconfig;
pub mod kubeletconfig;
pub mod listeners;
pub mod metrics;
pub mod pki;
pub mod portwait;
pub mod probe;
pub mod version;

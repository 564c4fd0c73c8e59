//! One module per subcommand; each resolves its flags and prints its result.

pub mod audit;
pub mod audit_log;
pub mod can_i;
pub mod check_config;
pub mod completion;
pub mod impact;
pub mod suggest_role;
pub mod who_can;

//! One module per subcommand; each takes its parsed arguments and writes its own output.

pub mod devices;

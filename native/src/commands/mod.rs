//! One module per subcommand; each takes its parsed arguments and writes its own output.

pub mod attend_sd;
pub mod bench_unet;
pub mod devices;
pub mod extract;
pub mod teacher_args;

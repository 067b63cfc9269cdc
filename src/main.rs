use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = <ringseed::cli::Cli as clap::Parser>::parse();
    ringseed::commands::run(cli)
}

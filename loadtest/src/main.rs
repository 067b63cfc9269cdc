use clap::Parser;
use ringseed_loadtest::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let ok = match cli.command {
        Some(Command::Compare(args)) => ringseed_loadtest::compare::main_compare(args)?,
        Some(Command::Swarm(args)) => ringseed_loadtest::swarm::main_swarm(args)?,
        Some(Command::Ceiling(args)) => ringseed_loadtest::ceiling::main_ceiling(args)?,
        Some(Command::EpollSeed(args)) => ringseed_loadtest::epollseed::main_epoll_seed(args)?,
        None => ringseed_loadtest::run::main_run(&cli.run.resolve()?)?,
    };
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

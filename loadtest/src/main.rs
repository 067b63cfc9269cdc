fn main() {
    eprintln!("ringseed-loadtest: not built yet (see the load-generator issue)");
    std::process::exit(2);
}

fn main() {
    eprintln!("loadtest: not built yet (see issue 3)");
    std::process::exit(2);
}

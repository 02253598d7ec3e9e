//! `srmig`: the command-line front end. It parses arguments and calls into the library crates.
fn main() -> anyhow::Result<()> {
    Ok(())
}

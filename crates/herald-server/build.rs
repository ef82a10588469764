//! Rebuilds the server when a file of the Console changes: `include_dir!` embeds
//! `console/`, and Cargo on stable does not track the files a macro reads.
fn main() {
    println!("cargo:rerun-if-changed=console");
}

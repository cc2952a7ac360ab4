// espeak-ng comes from the system (Debian `libespeak-ng-dev`), so its version always matches
// the `espeak-ng-data` that `hark models fetch` takes from the same Debian release.
fn main() {
    println!("cargo:rustc-link-lib=dylib=espeak-ng");
}

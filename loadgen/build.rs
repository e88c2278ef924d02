//! Records how this binary was built, so every stored run can say whether
//! it measured optimised code (`meta.json`, and a run's validity).

fn main() {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    // PROFILE is "release" for release and any profile inheriting it.
    println!("cargo:rustc-env=BUTTON_BUILD_PROFILE={}", var("PROFILE"));
    println!(
        "cargo:rustc-env=BUTTON_BUILD_OPT_LEVEL={}",
        var("OPT_LEVEL")
    );
    println!("cargo:rustc-env=BUTTON_BUILD_TARGET={}", var("TARGET"));
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    let cpu = flags
        .split('\u{1f}')
        .collect::<Vec<_>>()
        .windows(2)
        .find_map(|w| match w {
            [a, b] if *a == "-C" => b.strip_prefix("target-cpu=").map(str::to_owned),
            _ => None,
        })
        .or_else(|| {
            flags
                .split('\u{1f}')
                .find_map(|f| f.strip_prefix("-Ctarget-cpu=").map(str::to_owned))
        })
        .unwrap_or_else(|| "generic".to_owned());
    println!("cargo:rustc-env=BUTTON_BUILD_TARGET_CPU={cpu}");
    let rustc =
        std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
    println!("cargo:rustc-env=BUTTON_BUILD_RUSTC={rustc}");
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    println!("cargo:rerun-if-changed=build.rs");
}

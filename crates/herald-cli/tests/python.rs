//! The Python client (`clients/python`, generated from the proto when it is built) against the
//! real `herald` binary: its unittest suite, including its example, in a virtualenv this test
//! makes under `target/tools/python-client` (grpcio and grpcio-tools come from PyPI).

use std::path::Path;
use std::process::Command;

fn run(what: &str, command: &mut Command) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_python_client_passes_its_tests_against_a_real_server() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = root.join("target/tools/python-client");
    let python = venv.join("bin/python");
    if !python.exists() {
        run("python3 -m venv", Command::new("python3").args(["-m", "venv"]).arg(&venv));
    }
    // Built and installed afresh each time: the generated code follows the proto.
    run(
        "pip install clients/python",
        Command::new(&python)
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check", "--force-reinstall", "--no-deps"])
            .arg(root.join("clients/python"))
            .env("PIP_ROOT_USER_ACTION", "ignore"),
    );
    run(
        "pip install the client's dependencies",
        Command::new(&python)
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .arg(root.join("clients/python"))
            .env("PIP_ROOT_USER_ACTION", "ignore"),
    );
    let out = Command::new(&python)
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(root.join("clients/python/tests"))
        .env("HERALD_BIN", env!("CARGO_BIN_EXE_herald"))
        .output()
        .expect("running the Python tests");
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the Python client's tests failed:\n{report}");
    assert!(report.contains("\nOK") && !report.contains("Ran 0 tests"), "{report}");
}

//! `wasm-ivr new NAME --lang rust|c|js|python`: a new IVR project that builds into a component
//! with one command (`./build.sh`) and tests itself (`./test.sh`, through `wasm-ivr simulate`).
//!
//! A project is self-contained: it carries its own copy of `wit/ivr.wit` and, for Rust, of the
//! SDK (its source is this build's `sdk/src/lib.rs`, so the copy never drifts from the SDK). The
//! templates are the files under `runtime/templates/`; `{{name}}`-style placeholders are filled
//! in here.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The contract every IVR is built against.
const WIT: &str = include_str!("../../wit/ivr.wit");
/// The Rust SDK's source, copied verbatim into Rust projects.
const SDK_LIB: &str = include_str!("../../sdk/src/lib.rs");
/// The wit-bindgen version the SDK is built with (the workspace's `wit-bindgen` requirement).
const WIT_BINDGEN_VERSION: &str = "0.63";
/// The wit-bindgen-cli release whose C bindings match [`WIT_BINDGEN_VERSION`].
const WIT_BINDGEN_CLI_VERSION: &str = "0.63.0";
/// The componentize-py release the Python template is written for.
const COMPONENTIZE_PY_VERSION: &str = "0.25.1";

const TEST_SH: &str = include_str!("../templates/common/test.sh");
const README: &str = include_str!("../templates/common/README.md");

/// The languages `wasm-ivr new` scaffolds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust, with the wasm-ivr SDK (cargo, wasm32-wasip2).
    Rust,
    /// C, on bindings from `wit-bindgen c` (clang, wasm-tools).
    C,
    /// JavaScript, built with componentize-qjs (npm).
    #[value(alias = "javascript")]
    Js,
    /// Python, built with componentize-py.
    #[value(alias = "py")]
    Python,
}

impl Lang {
    fn title(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::C => "C",
            Lang::Js => "JavaScript",
            Lang::Python => "Python",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::C => "c",
            Lang::Js => "js",
            Lang::Python => "python",
        }
    }

    /// The IVR's source file (for the README).
    fn source(self) -> &'static str {
        match self {
            Lang::Rust => "src/lib.rs",
            Lang::C => "menu.c",
            Lang::Js => "app.js",
            Lang::Python => "app.py",
        }
    }

    /// What `test.sh` watches to decide whether to rebuild.
    fn sources(self) -> &'static str {
        match self {
            Lang::Rust => "src Cargo.toml sdk wit build.sh",
            Lang::C => "menu.c wit build.sh",
            Lang::Js => "app.js package.json wit build.sh",
            Lang::Python => "app.py wit build.sh",
        }
    }

    /// README rows for the language's own files.
    fn layout(self) -> &'static str {
        match self {
            Lang::Rust => {
                "| `src/lib.rs` | the IVR |\n\
                 | `Cargo.toml` | the crate (a workspace of its own, so it builds anywhere) |\n\
                 | `sdk/` | the wasm-ivr Rust SDK (a copy) |\n"
            }
            Lang::C => "| `menu.c` | the IVR |\n",
            Lang::Js => {
                "| `app.js` | the IVR |\n\
                 | `package.json` | the build tool, componentize-qjs, pinned |\n"
            }
            Lang::Python => "| `app.py` | the IVR |\n",
        }
    }

    /// The language's files: (path in the project, template).
    fn files(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Lang::Rust => vec![
                (
                    "Cargo.toml",
                    include_str!("../templates/rust/Cargo.toml.tmpl"),
                ),
                ("src/lib.rs", include_str!("../templates/rust/lib.rs.tmpl")),
                (
                    "sdk/Cargo.toml",
                    include_str!("../templates/rust/sdk-Cargo.toml.tmpl"),
                ),
                ("sdk/src/lib.rs", SDK_LIB),
                ("build.sh", include_str!("../templates/rust/build.sh")),
                (".gitignore", include_str!("../templates/rust/gitignore")),
            ],
            Lang::C => vec![
                ("menu.c", include_str!("../templates/c/menu.c")),
                ("build.sh", include_str!("../templates/c/build.sh")),
                (".gitignore", include_str!("../templates/c/gitignore")),
            ],
            Lang::Js => vec![
                ("app.js", include_str!("../templates/js/app.js")),
                ("package.json", include_str!("../templates/js/package.json")),
                ("build.sh", include_str!("../templates/js/build.sh")),
                (".gitignore", include_str!("../templates/js/gitignore")),
            ],
            Lang::Python => vec![
                ("app.py", include_str!("../templates/python/app.py")),
                ("build.sh", include_str!("../templates/python/build.sh")),
                (".gitignore", include_str!("../templates/python/gitignore")),
            ],
        }
    }

    fn toolchain(self) -> &'static str {
        match self {
            Lang::Rust => include_str!("../templates/rust/toolchain.md"),
            Lang::C => include_str!("../templates/c/toolchain.md"),
            Lang::Js => include_str!("../templates/js/toolchain.md"),
            Lang::Python => include_str!("../templates/python/toolchain.md"),
        }
    }
}

/// Checks that `name` works as an IVR name, a folder, a Cargo package and an npm package:
/// lowercase ASCII letters, digits and `-`, starting with a letter, at most 64 characters.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid IVR name {name:?}: use lowercase letters, digits and '-', starting with a \
             letter (at most 64 characters), e.g. \"main-menu\""
        ))
    }
}

/// Fills the placeholders of a template.
fn render(template: &str, name: &str) -> String {
    template
        .replace("{{name}}", name)
        .replace("{{crate}}", &name.replace('-', "_"))
        .replace("{{version}}", env!("CARGO_PKG_VERSION"))
        .replace("{{wit_bindgen}}", WIT_BINDGEN_VERSION)
        .replace("{{wit_bindgen_cli}}", WIT_BINDGEN_CLI_VERSION)
        .replace("{{componentize_py}}", COMPONENTIZE_PY_VERSION)
}

/// Every file of a new project: (path in the project, contents, executable).
pub fn project_files(name: &str, lang: Lang) -> Vec<(PathBuf, String, bool)> {
    let mut files = vec![(PathBuf::from("wit/ivr.wit"), WIT.to_owned(), false)];
    for (path, template) in lang.files() {
        // The SDK's source is copied as it is: it contains no placeholders, but `{{` could
        // appear in it one day.
        let contents = if template == SDK_LIB {
            template.to_owned()
        } else {
            render(template, name)
        };
        files.push((PathBuf::from(path), contents, path.ends_with(".sh")));
    }
    let test_sh = render(&TEST_SH.replace("{{sources}}", lang.sources()), name);
    files.push((PathBuf::from("test.sh"), test_sh, true));
    let readme = README
        .replace("{{language}}", lang.title())
        .replace("{{lang}}", lang.flag())
        .replace("{{source}}", lang.source())
        .replace("{{layout}}", lang.layout())
        .replace("{{toolchain}}", lang.toolchain());
    files.push((PathBuf::from("README.md"), render(&readme, name), false));
    files
}

/// Creates `parent/name/` with a new project. Fails, writing nothing, when the folder exists.
pub fn create(name: &str, lang: Lang, parent: &Path) -> Result<PathBuf> {
    validate_name(name).map_err(anyhow::Error::msg)?;
    let root = parent.join(name);
    if root.exists() || root.is_symlink() {
        bail!(
            "{} already exists; nothing was written (pick another name or --dir)",
            root.display()
        );
    }
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    // create_dir (not _all) fails if the folder appeared meanwhile: never write into a folder
    // this command did not create.
    std::fs::create_dir(&root).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{} already exists; nothing was written (pick another name or --dir)",
                root.display()
            )
        } else {
            anyhow::Error::new(e).context(format!("cannot create {}", root.display()))
        }
    })?;
    if let Err(e) = write_files(&root, &project_files(name, lang)) {
        // The folder is ours: leave nothing half-written behind.
        let _ = std::fs::remove_dir_all(&root);
        return Err(e);
    }
    Ok(root)
}

fn write_files(root: &Path, files: &[(PathBuf, String, bool)]) -> Result<()> {
    for (path, contents, executable) in files {
        let target = root.join(path);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&target, contents)
            .with_context(|| format!("cannot write {}", target.display()))?;
        if *executable {
            make_executable(&target)?;
        }
    }
    Ok(())
}

#[cfg(unix)]
fn make_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_path: &Path) -> Result<()> {
    Ok(())
}

/// `wasm-ivr new`: creates the project and says what to do next.
pub fn run(name: &str, lang: Lang, parent: &Path) -> Result<ExitCode> {
    let root = create(name, lang, parent)?;
    println!(
        "created {} ({} IVR: {}, build.sh, test.sh, README.md)",
        root.display(),
        lang.title(),
        lang.source()
    );
    println!("next:");
    println!("  cd {}", root.display());
    println!("  ./build.sh     # -> {name}.wasm");
    println!("  ./test.sh      # scripted calls through wasm-ivr simulate");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["menu", "main-menu", "ivr2", "a"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "Menu", "2menu", "-menu", "menu-", "my_menu", "a/b", "..", "a b",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_placeholder_is_filled() {
        for lang in [Lang::Rust, Lang::C, Lang::Js, Lang::Python] {
            for (path, contents, _) in project_files("front-desk", lang) {
                if path.ends_with("sdk/src/lib.rs") {
                    assert_eq!(contents, SDK_LIB);
                    continue;
                }
                assert!(
                    !contents.contains("{{"),
                    "{lang:?} {}: unfilled placeholder",
                    path.display()
                );
            }
        }
    }

    /// The standalone SDK manifest asks for the wit-bindgen the workspace builds the SDK with,
    /// and has the SDK's dependencies and features.
    #[test]
    fn the_sdk_copy_matches_the_workspace() {
        let workspace: toml::Table =
            toml::from_str(include_str!("../../Cargo.toml")).expect("workspace Cargo.toml");
        let sdk: toml::Table =
            toml::from_str(include_str!("../../sdk/Cargo.toml")).expect("sdk/Cargo.toml");
        let copy: toml::Table = toml::from_str(&render(
            include_str!("../templates/rust/sdk-Cargo.toml.tmpl"),
            "x",
        ))
        .expect("template");
        let wit_bindgen = &workspace["workspace"]["dependencies"]["wit-bindgen"];
        assert_eq!(
            copy["dependencies"]["wit-bindgen"]["version"],
            wit_bindgen["version"]
        );
        assert_eq!(
            copy["dependencies"]["wit-bindgen"]["features"],
            wit_bindgen["features"]
        );
        let keys = |t: &toml::Value| t.as_table().map(|t| t.keys().cloned().collect::<Vec<_>>());
        assert_eq!(keys(&copy["dependencies"]), keys(&sdk["dependencies"]));
        assert_eq!(copy["features"], sdk["features"]);
        assert!(SDK_LIB.contains("path: \"../wit\""), "the SDK reads ../wit");
    }
}

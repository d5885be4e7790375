//! Reading a policy directory: `*.toml` files in lexical order of name, following symlinks (Kubernetes
//! ConfigMaps mount files as symlinks into a `..data` directory), skipping dotfiles (editor lock and swap
//! files) and the `tests/` fixtures directory. Then the whole set goes to the compiler.

use std::path::Path;
use std::sync::Arc;

use super::compile::{FenceFiles, compile_with};
use super::{PolicyError, PolicyErrors, Revision, Source, compile};

/// The policy compiled into the binary, served when no directory is given and there is no `./policies`.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// Compiles the embedded default policy.
pub fn embedded_default() -> Result<Revision, PolicyErrors> {
    compile(vec![Source::new("<embedded>/default.toml", EMBEDDED_DEFAULT)])
}

/// Reads and compiles a policy directory; every problem is reported at once. Fence files the rules name
/// (`location.within`) are read from the directory too.
pub fn load_dir(dir: &Path) -> Result<Revision, PolicyErrors> {
    let sources = read_sources(dir)?;
    compile_with(sources, &DirFences(dir))
}

/// Fence files, read from a policy directory (paths relative to it; the compiler refuses absolute paths
/// and `..`).
pub struct DirFences<'a>(pub &'a Path);

impl FenceFiles for DirFences<'_> {
    fn read(&self, path: &str) -> Result<String, String> {
        let full = self.0.join(path);
        // A link may point anywhere: the file it resolves to must be inside the (resolved) directory too.
        if let (Ok(root), Ok(real)) = (self.0.canonicalize(), full.canonicalize())
            && !real.starts_with(&root)
        {
            return Err("resolves outside the policy directory (a symbolic link?): refused".to_owned());
        }
        match std::fs::metadata(&full) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err("not a regular file".to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!("no such file in {}", self.0.display()));
            }
            Err(e) => return Err(format!("cannot read: {e}")),
        }
        let bytes = std::fs::read(&full).map_err(|e| format!("cannot read: {e}"))?;
        String::from_utf8(bytes).map_err(|_| "not valid UTF-8".to_owned())
    }
}

/// Reads the policy files of a directory, in lexical order of file name.
pub fn read_sources(dir: &Path) -> Result<Vec<Source>, PolicyErrors> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| PolicyErrors::single(format!("{}: cannot read policy directory: {e}", dir.display())))?;
    let mut names = Vec::new();
    let mut errors = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                errors.push(PolicyError {
                    location: None,
                    message: format!("{}: {e}", dir.display()),
                });
                continue;
            }
        };
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            let lossy = name.to_string_lossy();
            if !lossy.starts_with('.') && lossy.ends_with(".toml") {
                errors.push(PolicyError {
                    location: None,
                    message: format!(
                        "{}: the file name is not valid UTF-8: rename it",
                        dir.join(&*lossy).display()
                    ),
                });
            }
            continue;
        };
        if name.starts_with('.') || !name.ends_with(".toml") {
            continue;
        }
        names.push(name.to_owned());
    }
    names.sort();
    let mut sources = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(&name);
        let display: Arc<str> = path.display().to_string().into();
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                errors.push(PolicyError {
                    location: None,
                    message: format!("{display}: not a regular file (a directory, or a link to one)"),
                });
                continue;
            }
            Err(e) => {
                errors.push(PolicyError {
                    location: None,
                    message: format!("{display}: cannot read: {e}"),
                });
                continue;
            }
        }
        match std::fs::read(&path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => sources.push(Source::new(display, text)),
                Err(_) => errors.push(PolicyError {
                    location: None,
                    message: format!("{display}: not valid UTF-8"),
                }),
            },
            Err(e) => errors.push(PolicyError {
                location: None,
                message: format!("{display}: cannot read: {e}"),
            }),
        }
    }
    if sources.is_empty() && errors.is_empty() {
        errors.push(PolicyError {
            location: None,
            message: format!("{}: no policy files (*.toml) in the directory", dir.display()),
        });
    }
    if errors.is_empty() {
        Ok(sources)
    } else {
        // Report the unreadable files together with whatever is wrong in the readable ones.
        if let Err(PolicyErrors(more)) = compile_with(sources, &DirFences(dir)) {
            errors.extend(more);
        }
        Err(PolicyErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_file_whose_name_is_not_utf8_is_an_error_not_skipped() {
        use std::os::unix::ffi::OsStrExt;
        let d = std::env::temp_dir().join(format!("dps-load-{}-utf8", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        std::fs::write(d.join("a.toml"), "[[rule]]\nname = \"a\"\n").expect("write");
        let bad = d.join(std::ffi::OsStr::from_bytes(b"b\xff.toml"));
        std::fs::write(&bad, "[[rule]]\nname = \"b\"\n").expect("write");
        std::fs::write(d.join(std::ffi::OsStr::from_bytes(b".swap\xff.toml")), "x").expect("write");
        let errors = load_dir(&d).expect_err("refused");
        assert_eq!(errors.0.len(), 1, "{errors}");
        assert!(
            errors.0[0].to_string().contains("the file name is not valid UTF-8"),
            "{errors}"
        );
        let _ = std::fs::remove_dir_all(d);
    }
}

#[cfg(test)]
mod fence_tests {
    use super::*;

    #[test]
    fn a_fence_linked_from_outside_the_directory_is_refused() {
        let base = std::env::temp_dir().join(format!("dps-load-{}-fence-link", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join("policies");
        std::fs::create_dir_all(dir.join("fences")).expect("dir");
        let square = r#"{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}"#;
        std::fs::write(base.join("outside.geojson"), square).expect("outside");
        std::fs::write(dir.join("fences/inside.geojson"), square).expect("inside");
        std::os::unix::fs::symlink(base.join("outside.geojson"), dir.join("fences/link.geojson")).expect("link");
        let rule = |f: &str| {
            format!("[[rule]]\nname = \"r\"\nwhen = {{ location = {{ within = \"{f}\" }} }}\n[[rule]]\nname = \"s\"\n")
        };
        std::fs::write(dir.join("p.toml"), rule("fences/inside.geojson")).expect("write");
        assert!(load_dir(&dir).is_ok());
        std::fs::write(dir.join("p.toml"), rule("fences/link.geojson")).expect("write");
        let e = load_dir(&dir).expect_err("outside");
        assert!(e.to_string().contains("resolves outside the policy directory"), "{e}");
        let _ = std::fs::remove_dir_all(base);
    }
}

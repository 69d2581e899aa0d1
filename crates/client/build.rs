//! Embeds the repository's `frontend/` in the binary, so `guestbook-client` serves the UI from
//! whatever directory it is started in (issue 15). Writes `$OUT_DIR/frontend_files.rs`: one
//! `include_bytes!` per file, with the Content-Type chosen here so the binary needs no MIME table.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs};

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest.join("../../frontend");
    // Directories too: a file added to frontend/ changes its directory's mtime.
    println!("cargo:rerun-if-changed={}", root.display());
    let root = fs::canonicalize(&root).unwrap_or_else(|err| {
        panic!(
            "frontend/ not found at {} ({err}): the client embeds it; a container build must COPY frontend too",
            root.display()
        )
    });
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    files.sort();
    let mut out = String::from(
        "/// Every file under frontend/: (path relative to it, Content-Type, bytes).\n\
         pub static FILES: &[(&str, &str, &[u8])] = &[\n",
    );
    for (relative, path) in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        writeln!(
            out,
            "    ({relative:?}, {:?}, include_bytes!({:?})),",
            content_type(path),
            path.display().to_string()
        )
        .expect("writing to a String cannot fail");
    }
    out.push_str("];\n");
    let dest = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("frontend_files.rs");
    fs::write(&dest, out).unwrap_or_else(|err| panic!("writing {}: {err}", dest.display()));
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|err| panic!("reading {}: {err}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|err| panic!("reading {}: {err}", dir.display()))
            .path();
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            collect(root, &path, files);
        } else {
            let relative = path.strip_prefix(root).expect("under root");
            // URL paths use '/', whatever the build machine's separator.
            let relative: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            files.push((relative.join("/"), path));
        }
    }
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|ext| ext.to_str()).unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

//! Embeds every `catalog/endpoints/*.txt` file into the crate, in name order.

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let directory = manifest.join("../../catalog/endpoints");
    println!("cargo::rerun-if-changed={}", directory.display());
    let mut files: Vec<PathBuf> = match fs::read_dir(&directory) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "txt"))
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    let mut code = String::from("&[\n");
    for path in &files {
        println!("cargo::rerun-if-changed={}", path.display());
        let name = path.file_name().and_then(|n| n.to_str()).ok_or("file name is not UTF-8")?;
        code.push_str(&format!(
            "    ({:?}, include_str!({:?})),\n",
            format!("catalog/endpoints/{name}"),
            path.display().to_string()
        ));
    }
    code.push(']');
    fs::write(PathBuf::from(env::var("OUT_DIR")?).join("builtin_endpoints.rs"), code)?;
    Ok(())
}

//! Prints Ferry's CRDs as YAML, or with `--out DIR` writes them and a kustomization into DIR.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;
use std::{env, fs};

use ferry_shared::crd;

const USAGE: &str = "usage: crdgen [--out DIR | DIR]";

fn main() -> Result<ExitCode, Box<dyn Error>> {
    let args: Vec<String> = env::args().skip(1).collect();
    let out = match args.as_slice() {
        [] => None,
        [flag] if flag == "-h" || flag == "--help" => {
            println!("{USAGE}");
            return Ok(ExitCode::SUCCESS);
        }
        [flag, dir] if flag == "--out" => Some(PathBuf::from(dir)),
        [dir] if !dir.starts_with('-') => Some(PathBuf::from(dir)),
        _ => {
            eprintln!("{USAGE}");
            return Ok(ExitCode::from(2));
        }
    };
    match out {
        None => {
            let yamls: Vec<String> = crd::manifests()?.into_iter().map(|(_, y)| y).collect();
            print!("{}", yamls.join("---\n"));
        }
        Some(dir) => {
            fs::create_dir_all(&dir)?;
            for (file_name, contents) in crd::deploy_files()? {
                fs::write(dir.join(&file_name), contents)?;
                eprintln!("wrote {}", dir.join(file_name).display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

use anyhow::Result;

use super::Ctx;

pub fn run(a: liboci_cli::List, ctx: &Ctx) -> Result<()> {
    let mut rows = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&ctx.root) {
        let mut ids: Vec<String> = rd.flatten().filter(|e| e.path().join("state.json").exists()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        ids.sort();
        for id in ids {
            if let Ok(s) = super::state::state_of(ctx, &id) {
                rows.push(s);
            }
        }
    }
    match (a.format.as_str(), a.quiet) {
        (_, true) => rows.iter().for_each(|s| println!("{}", s.id)),
        ("json", _) => println!("{}", serde_json::to_string(&rows)?),
        ("table", _) => {
            println!("{:<24} {:<8} {:<10} {:<40} {}", "ID", "PID", "STATUS", "BUNDLE", "CREATED");
            for s in &rows {
                println!("{:<24} {:<8} {:<10} {:<40} {}", s.id, s.pid, s.status, s.bundle.display(), s.created);
            }
        }
        (f, _) => anyhow::bail!("invalid list format {f:?}: use table or json"),
    }
    Ok(())
}

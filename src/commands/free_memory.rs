//! `cluster-ai free-memory`: the memory measures now, with what each freed. Through the
//! running daemon (whose swap task can expand at once); without one, the same measures in
//! this process, except the swap expansion, which it says.

use std::process::ExitCode;

use super::progress::Progress;
use crate::cli::StatusArgs;
use crate::config::human_size;
use crate::control::{request, ClientError, Request};
use crate::emergency::{Action, Emergency};

pub fn main(args: StatusArgs) -> ExitCode {
    let (config, socket) = match super::config_and_socket("free-memory", &args) {
        Ok(v) => v,
        Err(code) => return code,
    };
    // Each Ollama unload may wait on its deadline: say how long it has been, on a terminal.
    let progress = Progress::start("free-memory: unloading Ollama models", None);
    let actions: Vec<Action> = match request(&socket, &Request::FreeMemory) {
        Ok(v) => {
            drop(progress);
            if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
                eprintln!("cluster-ai free-memory: {e}");
                return ExitCode::FAILURE;
            }
            match serde_json::from_value(v["actions"].clone()) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("cluster-ai free-memory: the daemon's answer is not understood: {e}");
                    return ExitCode::from(super::exit::UNKNOWN);
                }
            }
        }
        Err(ClientError::NotRunning(_)) => {
            drop(progress);
            eprintln!("no daemon is running: swap is not expanded (`cluster-ai swap expand` does it); the other measures run here");
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cluster-ai free-memory: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let progress = Progress::start("free-memory: unloading Ollama models", None);
            // Made and dropped inside the runtime (zbus's drop needs it).
            let actions = rt.block_on(async {
                let mut measures = Emergency::new(&config, None, crate::runtime::Os::real(), false);
                measures.memory_act("free-memory", "asked by cluster-ai free-memory").await
            });
            drop(progress);
            actions
        }
        Err(e) => {
            drop(progress);
            eprintln!("cluster-ai free-memory: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&actions).unwrap_or_default());
    } else if actions.is_empty() {
        println!("nothing to free: no Ollama model to unload ([emergency] ollama; `cluster-ai status` says which are kept, in GPU memory or not released), drop_page_cache is off");
    }
    for a in actions.iter().filter(|_| !args.json) {
        let freed = a.freed_bytes.map(|b| format!(": freed {}", human_size(b))).unwrap_or_default();
        let failed = if a.done { "" } else { "failed: " };
        println!("{failed}{}{freed}", a.detail);
    }
    if actions.iter().any(|a| !a.done) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

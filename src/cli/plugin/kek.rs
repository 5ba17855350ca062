//! `kek status|rotate|backup-help`: the operator's key-encryption keys, reusing `cli::kek`.

use super::args::KekCommand;
use super::ctx::Ctx;
use super::error::Error;
use super::output::structured;
use crate::cli::kek as ops;
use crate::controller::Error as OpError;

pub async fn run(ctx: &Ctx, keyring: &str, cmd: KekCommand) -> Result<(), Error> {
    let op = ctx.operator_namespace.as_str();
    let fail = |what: &str, e: OpError| match e {
        OpError::Kube(kube::Error::Api(s)) if s.code == 404 => Error::NotFound(format!(
            "the KEK keyring Secret {keyring} was not found in namespace {op}: is the operator installed there? \
             Pass --operator-namespace if it runs elsewhere"
        )),
        OpError::Kube(k) => Error::kube(format!("{what} (keyring {op}/{keyring})"))(k),
        other => Error::Failed(format!("{what}: {other}")),
    };
    match cmd {
        KekCommand::Status => {
            let usage = ops::status(&ctx.client, op, keyring).await.map_err(|e| fail("reading KEK usage", e))?;
            let json = serde_json::json!({
                "active": usage.active,
                "keks": usage.usage.iter().map(|(id, (keys, secrets))| serde_json::json!({
                    "id": id, "byokKeys": keys, "ciphertexts": secrets,
                    "removable": *id != usage.active && *keys == 0 && *secrets == 0,
                })).collect::<Vec<_>>(),
            });
            if !structured(ctx.output, &json)? {
                print!("{}", usage.render());
            }
        }
        KekCommand::Rotate => {
            let id = ops::rotate(&ctx.client, op, keyring).await.map_err(|e| fail("rotating the KEK", e))?;
            println!("new active KEK {id}; the operator re-encrypts every key under it");
            println!(
                "follow with `kubectl byok kek status`; back up the keyring again now (`kubectl byok kek backup-help`)"
            );
        }
        KekCommand::BackupHelp => print!("{}", backup_help(op, keyring)),
    }
    Ok(())
}

/// How to back up and restore the keyring.
pub fn backup_help(op: &str, keyring: &str) -> String {
    format!(
        "The KEK keyring (Secret {keyring} in namespace {op}) decrypts every imported key.\n\
         Losing it loses them all; anyone holding it and etcd can read them. Back it up like a root CA.\n\n\
         Back up (after installing, and after every `kubectl byok kek rotate`):\n  \
           kubectl get secret {keyring} -n {op} -o yaml > {keyring}.yaml\n  \
           # store the file offline and encrypted (a password manager, a hardware-backed vault); never in git\n  \
           # then delete the local copy: shred -u {keyring}.yaml\n\n\
         Restore (into a rebuilt cluster, BEFORE starting the operator, or it generates a new keyring):\n  \
           kubectl create namespace {op}\n  \
           kubectl apply -f {keyring}.yaml   # remove metadata.uid/resourceVersion first if apply refuses\n  \
           # then install or start the operator\n\n\
         Ciphertexts are bound to their ByokKey's uid: ByokKeys restored as new objects must be re-imported\n\
         (keep sources with --retain, or use sealed keys from `kubectl byok seal`, for disaster recovery).\n\
         The sealing key (Secret byok-sealing-key in {op}) opens sealed keys: back it up the same way.\n"
    )
}

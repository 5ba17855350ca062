//! The mock LLM provider as a standalone server, for demos and manual testing.
//! Listens on loopback unless told otherwise: it accepts any key and must not face a network.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use byok_operator::mock::{self, MockConfig};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(version, about = "Mock OpenAI, Anthropic, Gemini and Azure OpenAI APIs on one port")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "BYOK_MOCK_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Latency added to every request, in milliseconds.
    #[arg(long, env = "BYOK_MOCK_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        eprintln!("warning: listening on {} (not loopback); the mock accepts any key", args.listen);
    }
    let config = MockConfig {
        addr: Some(args.listen),
        latency: Duration::from_millis(args.latency_ms),
        ..MockConfig::default()
    };
    let handle = mock::start(config).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    let endpoints = handle.endpoints();
    println!("byok-mock-provider listening on http://{}", handle.addr());
    println!("  openai:       {}", endpoints.openai);
    println!("  anthropic:    {}", endpoints.anthropic);
    println!("  google:       {}", endpoints.google);
    println!("  azure_openai: {}", handle.azure_endpoint());
    println!(
        "  control:      POST /_mock/behaviour {{key, behaviour, times}}, POST /_mock/latency {{ms}}, GET /_mock/stats"
    );
    shutdown_signal().await?;
    handle.shutdown().await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM (Kubernetes stops pods with SIGTERM).
async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}

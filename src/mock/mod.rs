//! The mock LLM provider: a real HTTP server faithful to shared/providers.md.

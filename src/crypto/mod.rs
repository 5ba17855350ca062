//! Key encryption.

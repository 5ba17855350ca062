//! Provider clients: key validation and judge calls, one module per provider.

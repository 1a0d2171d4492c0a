"""hybridlearn's Hydra plugins (Hydra takes plugins only from the `hydra_plugins` package)."""

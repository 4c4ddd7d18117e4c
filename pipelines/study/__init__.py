"""Studies: TOML configs, the steps of a study, the executors that run them (local, Ray)."""

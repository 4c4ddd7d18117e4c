"""Study configurations shipped with forgelab (TOML files, read with importlib.resources)."""

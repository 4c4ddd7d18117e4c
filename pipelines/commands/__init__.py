"""Groups of ``forgelab`` commands; each module has ``register(app)``."""

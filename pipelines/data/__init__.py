"""Image data: loading and preprocessing (images), downloads, fake arrays, format parity and alignment."""

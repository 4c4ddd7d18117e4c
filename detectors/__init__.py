"""Fake-image detectors: spectral and pixel features, classical and neural classifiers, metrics."""

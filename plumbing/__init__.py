"""Shared plumbing at the bottom of the import graph: files, devices, progress bars, digests.

Nothing here knows about GANs, detectors or pipelines; every other package may import it,
and it imports none of them.
"""

"""Evaluation: the shared cell protocol, transfer matrices, benchmarks on the field's layouts, generator quality."""

"""Analyses of what layers encode: sensitivity of each layer to musical perturbations of the input."""

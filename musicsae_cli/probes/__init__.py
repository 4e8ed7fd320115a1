"""Linear probes on activation stores: one probe per hookpoint for a label, leak-free by group.

    ProbeSet.load(path) / .save(dir) / .logits / .predict_proba / .predict / .class_index / .direction
"""

from .model import FORMAT_VERSION, KIND, ProbeSet

__all__ = ["FORMAT_VERSION", "KIND", "ProbeSet"]

"""Audio services: loading and writing, dataset manifests, concept-audio synthesis."""

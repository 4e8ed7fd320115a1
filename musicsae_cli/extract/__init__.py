"""`musicsae extract`: activations of model layers into an activation store (from audio or during generation)."""

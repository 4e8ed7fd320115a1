"""Learned prompt concepts (textual inversion): new prompt tokens trained on a folder of a concept's audio, only
their embedding rows learned, then usable in any prompt as `<concept>` (`musicsae concept learn`, `--concepts`)."""

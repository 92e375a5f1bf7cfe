"""The bottom layer: what every other part of inweights may import and which imports nothing of inweights above it
(errors, seeds, reading and writing files, the loader policy for external data, a run folder's life)."""

"""Plumbing with no knowledge of Markov chains: atomic files, the memory budget, progress bars, device meshes."""

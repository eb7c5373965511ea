"""Storage backends: a handle-based interface in the shape of 9P2000.L."""

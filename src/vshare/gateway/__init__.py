"""The gateway: 9P2000.L sessions over a confined backend."""

"""The engine: catalog reads, the executor, the advisory lock, the state store."""

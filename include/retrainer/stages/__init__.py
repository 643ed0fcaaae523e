"""The pipeline: one function per stage over the typed results of the stages before it (orchestration only)."""

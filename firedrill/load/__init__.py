"""Background load beside the canary: many writers at a requested rate, every acknowledged write
sequence-numbered and read back afterwards (`generator`, `accounting`), with one client module per
store (`pg`, `redis`)."""

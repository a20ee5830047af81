"""The learner over N ranks of one process group (FSDP2): rank bookkeeping and sharded checkpoints."""

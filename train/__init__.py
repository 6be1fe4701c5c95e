"""Training: rollouts over vectorized envs, policy-gradient losses, the trainer loop (in progress)."""
